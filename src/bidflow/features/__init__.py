"""Features shared by training and serving, and access to the Feast feature store."""
