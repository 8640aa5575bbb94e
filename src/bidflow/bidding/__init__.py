"""Bid optimisation: the market's bid landscape, bidding policies, and the replay that judges them.

The protocol is the standard one of the RTB literature (Zhang et al. 2014; Cai et al. 2017): auctions
come in the logged order; a bid wins when it is at least the auction's market price (the highest
competing bid), and the winner pays the market price (second price). The budget is a fraction ``c0``
of what the campaign spent per auction in its training period, times the episode length ``T``, and
starts afresh every ``T`` auctions.

Modules:
    auctions: a campaign's training statistics and its logged auctions (click, market price, pCTR).
    landscape: P(win | bid) and the expected cost, from a price histogram or from censored logs.
    value: the dynamic-programming value function over remaining auctions and budget (RLB).
    policies: constant, linear, ORTB and budget-aware policies behind one interface.
    replay: plays a policy through logged auctions under a budget.
    artifact: the fitted bidder as a versioned folder.
"""
