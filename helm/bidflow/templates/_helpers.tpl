{{/* Name prefix of the release's objects: "bidflow" for release "bidflow", else "<release>-bidflow". */}}
{{- define "bidflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. Selectors use bidflow.selectorLabels only, which never change on upgrade. */}}
{{- define "bidflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bidflow
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "feature-server"). */}}
{{- define "bidflow.selectorLabels" -}}
app.kubernetes.io/name: bidflow
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* image reference: call with (dict "image" .Values.x.image "ctx" $). With a digest, `repository@sha256:...` (the
tag is then ignored: the digest alone names the image); otherwise `repository:tag`, the tag defaulting to appVersion. */}}
{{- define "bidflow.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .ctx.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The PodDisruptionBudget API: policy/v1 (every supported EKS version); policy/v1beta1 only on a cluster that does
not serve v1 (before 1.21; the tests' kube-apiserver 1.20). `helm template` assumes policy/v1. */}}
{{- define "bidflow.pdbApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1" -}}policy/v1{{- else -}}policy/v1beta1{{- end -}}
{{- end -}}

{{/* Pod-level security settings shared by every workload. */}}
{{- define "bidflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security settings shared by every container. */}}
{{- define "bidflow.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* ServiceAccount annotations: the IRSA role (when set) and any extra annotations. */}}
{{- define "bidflow.serviceAccountAnnotations" -}}
{{- $annotations := deepCopy (.annotations | default dict) -}}
{{- if .irsaRoleArn -}}
{{- $_ := set $annotations "eks.amazonaws.com/role-arn" .irsaRoleArn -}}
{{- end -}}
{{- with $annotations -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* No secret values in any manifest: a variable whose name looks secret must come from a Secret, never from
`value`. Call with (dict "env" .Values.x.env "path" "x.env"). */}}
{{- define "bidflow.refuseSecretValues" -}}
{{- range $i, $e := .env }}
{{- if and (hasKey $e "value") (regexMatch "(PASSWORD|SECRET|TOKEN|CREDENTIAL|API_KEY|ACCESS_KEY|REDIS|REGISTRY_URL|TRACKING_URI)" $e.name) }}
{{- fail (printf "%s[%d] %s looks like a secret: put it in a Secret and use envFromSecret or valueFrom.secretKeyRef, never a value in a values file" $.path $i $e.name) }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The feature store's ConfigMap (featureStore), and the folder every reader mounts it at. */}}
{{- define "bidflow.featureStoreConfigMap" -}}
{{- printf "%s-feature-store" (include "bidflow.fullname" .) -}}
{{- end -}}
{{- define "bidflow.featureStoreDir" -}}/etc/bidflow/feature-store{{- end -}}

{{/* The two connection strings that the feature store's file names (${BIDFLOW_FEAST_REGISTRY_URL},
${BIDFLOW_FEAST_REDIS}), from featureStore.secret: env entries of a container that reads the feature store. */}}
{{- define "bidflow.featureStoreSecretEnv" -}}
{{- $s := .Values.featureStore.secret -}}
- name: BIDFLOW_FEAST_REGISTRY_URL
  valueFrom:
    secretKeyRef:
      name: {{ $s.name }}
      key: {{ $s.registryUrlKey }}
- name: BIDFLOW_FEAST_REDIS
  valueFrom:
    secretKeyRef:
      name: {{ $s.name }}
      key: {{ $s.redisKey }}
{{- end -}}

{{/* The volume of the feature store's ConfigMap (one file, read-only). */}}
{{- define "bidflow.featureStoreVolume" -}}
- name: feature-store
  configMap:
    name: {{ include "bidflow.featureStoreConfigMap" . }}
{{- end -}}

{{/* The monitor's Service address, as the bid filter's payload logger calls it. */}}
{{- define "bidflow.monitorUrl" -}}
{{- printf "http://%s-monitor.%s.svc.cluster.local:%v/" (include "bidflow.fullname" .) .Release.Namespace .Values.monitor.service.port -}}
{{- end -}}

{{/*
A KServe v1beta1 InferenceService with a custom predictor container (the bidflow model server). Both models use it:
  (dict "ctx" $ "model" .Values.bidFilter "path" "bidFilter" "kind" "bid_filter" "component" "bid-filter"
        "serviceAccount" "..." "logger" (a LoggerSpec dict, or an empty dict for none))
The chart sets the model server's --kind, --model_name (the endpoint: /v1/models/<name>:predict), --model=/mnt/models
(where KServe's storage initializer puts STORAGE_URI), --http-port and, with modelVersion, --model-version; runtime.args
come after them. The server reads online features through the featureStore ConfigMap and Secret.
*/}}
{{- define "bidflow.inferenceService" -}}
{{- $ := .ctx }}
{{- $m := .model }}
{{- /* The schema already limits it; this guard also covers `--set-string` and schema-less renderers. */}}
{{- if and (not (kindIs "invalid" $m.canaryTrafficPercent)) (or (lt (int $m.canaryTrafficPercent) 0) (gt (int $m.canaryTrafficPercent) 100)) }}
{{- fail (printf "%s.canaryTrafficPercent must be between 0 and 100, got %v" .path $m.canaryTrafficPercent) }}
{{- end }}
{{- include "bidflow.refuseSecretValues" (dict "env" $m.env "path" (printf "%s.env" .path)) }}
{{- if gt (int $m.minReplicas) (int $m.maxReplicas) }}
{{- fail (printf "%s.minReplicas (%v) must not exceed %s.maxReplicas (%v)" .path $m.minReplicas .path $m.maxReplicas) }}
{{- end -}}
# KServe turns this into Knative revisions; with canaryTrafficPercent set, a spec change starts a canary.
# Validated offline against a schema generated from the kserve SDK; KServe's controller is not run in tests.
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {{ $m.name }}
  labels:
    {{- include "bidflow.labels" $ | nindent 4 }}
    {{- include "bidflow.selectorLabels" (dict "ctx" $ "component" .component) | nindent 4 }}
  {{- if $m.modelVersion }}
  annotations:
    # The model this spec serves, in the form `bidflow canary --backend kserve` records it: it takes over from here.
    bidflow.io/champion: {{ dict "name" .kind "version" $m.modelVersion "uri" $m.storageUri | toJson | quote }}
  {{- end }}
spec:
  predictor:
    serviceAccountName: {{ .serviceAccount }}
    minReplicas: {{ $m.minReplicas }}
    maxReplicas: {{ $m.maxReplicas }}
    {{- if not (kindIs "invalid" $m.canaryTrafficPercent) }}
    canaryTrafficPercent: {{ $m.canaryTrafficPercent }}
    {{- end }}
    {{- with .logger }}
    # KServe's payload logger: the agent beside the model server posts every request and response (CloudEvents)
    # to this URL. Delivery is validated on paper only (no KServe agent runs in tests).
    logger:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    # Labels of the predictor's pods: the PodDisruptionBudget (minReplicas >= 2) selects them by these.
    labels:
      {{- include "bidflow.selectorLabels" (dict "ctx" $ "component" .component) | nindent 6 }}
      {{- with $.Values.commonLabels }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    securityContext:
      {{- include "bidflow.podSecurityContext" $ | nindent 6 }}
    containers:
      # KServe's name for the model server container of a custom predictor.
      - name: kserve-container
        image: {{ include "bidflow.image" (dict "image" $m.runtime.image "ctx" $) | quote }}
        imagePullPolicy: {{ $m.runtime.image.pullPolicy }}
        args:
          - --kind={{ .kind }}
          - --model_name={{ $m.name }}
          - --model=/mnt/models
          - --http-port={{ $m.runtime.port }}
          {{- if $m.modelVersion }}
          # The version the server reports in every response: the drift monitor finds the answering role by it.
          - --model-version={{ $m.modelVersion }}
          {{- end }}
          {{- with $m.runtime.args }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        env:
          # A custom container with STORAGE_URI gets KServe's storage initializer: the model lands in /mnt/models.
          - name: STORAGE_URI
            value: {{ $m.storageUri | quote }}
          - name: HOME
            value: /tmp
          # Online features: the chart's feature_store.production.yaml (a Redis online store, the SQL registry), whose
          # connection strings come from featureStore.secret. The image's own feature repository is only a fallback.
          - name: BIDFLOW__FEATURES__ENVIRONMENT
            value: production
          - name: BIDFLOW__FEATURES__REPO
            value: {{ include "bidflow.featureStoreDir" $ }}
          {{- include "bidflow.featureStoreSecretEnv" $ | nindent 10 }}
          {{- with $m.env }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        {{- with $m.envFromSecret }}
        envFrom:
          - secretRef:
              name: {{ . }}
        {{- end }}
        ports:
          - containerPort: {{ $m.runtime.port }}
            protocol: TCP
        # The server listens at once and loads the model in the background (retrying until it loads), answering 503
        # on /v2/models/<name>/ready and /v1/models/<name> meanwhile: out of the Service, but alive. Readiness waits
        # for the model; liveness asks only whether the process answers (200 while loading), so a slow model load
        # never restarts the pod. Both on the serving port, the one port Knative lets a readiness probe use.
        readinessProbe:
          httpGet:
            path: /v2/models/{{ $m.name }}/ready
            port: {{ $m.runtime.port }}
          periodSeconds: 5
          timeoutSeconds: 3
          failureThreshold: 3
        livenessProbe:
          httpGet:
            path: /v2/health/live
            port: {{ $m.runtime.port }}
          # Startup allowance: Python and its imports (kserve, feast, mlflow) before the server listens; a process
          # that never answers is restarted after 30 + 6 x 10 = 90 s, one that stops answering after 60 s.
          initialDelaySeconds: 30
          periodSeconds: 10
          timeoutSeconds: 5
          failureThreshold: 6
        resources:
          {{- toYaml $m.resources | nindent 10 }}
        securityContext:
          {{- include "bidflow.containerSecurityContext" $ | nindent 10 }}
        volumeMounts:
          - name: tmp
            mountPath: /tmp
          - name: feature-store
            mountPath: {{ include "bidflow.featureStoreDir" $ }}
            readOnly: true
    volumes:
      - name: tmp
        emptyDir:
          sizeLimit: 256Mi
      {{- include "bidflow.featureStoreVolume" $ | nindent 6 }}
{{- end -}}

{{/* The Secret that holds the monitor's intake token: monitor.token.existingSecret, else `<fullname>-monitor-token`
(created by this chart). */}}
{{- define "bidflow.monitorTokenSecret" -}}
{{- .Values.monitor.token.existingSecret | default (printf "%s-monitor-token" (include "bidflow.fullname" .)) -}}
{{- end -}}

{{/*
The monitor's intake token, the same string wherever one render asks for it (the Secret and the bid filter's
logger URL): the first call resolves it and keeps it in .Values.monitor.token for the later ones.
- generated (no existingSecret): the value of the release's existing Secret when the cluster has one (`lookup`), so
  `helm upgrade` keeps it; otherwise (first install, and every `helm template`, which has no cluster) randAlphaNum 48.
- existingSecret: monitor.token.value when given (renders without a cluster: `helm template`, GitOps), else the
  Secret's key read with `lookup` at install/upgrade; neither: fail, since the logger URL cannot be rendered.
*/}}
{{- define "bidflow.monitorToken" -}}
{{- $t := .Values.monitor.token -}}
{{- if not (hasKey $t "resolved") -}}
{{- $name := include "bidflow.monitorTokenSecret" . -}}
{{- $found := "" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- if and $existing (hasKey ($existing.data | default dict) $t.secretKey) -}}
{{- $found = index $existing.data $t.secretKey | b64dec -}}
{{- end -}}
{{- $token := "" -}}
{{- if $t.existingSecret -}}
{{- $token = $t.value | default $found -}}
{{- if not $token -}}
{{- fail (printf "monitor.token.existingSecret=%s: the bid filter's payload logger URL must carry the token, and the Secret (key %s) cannot be read here (helm template, a client-side dry run, or the Secret is missing): create the Secret before `helm install`, or pass the same token as monitor.token.value" $name $t.secretKey) -}}
{{- end -}}
{{- else -}}
{{- if $t.value -}}
{{- fail "monitor.token.value is only for monitor.token.existingSecret (the logger URL's copy of a Secret made outside the chart); without existingSecret the chart generates the token and keeps it across upgrades" -}}
{{- end -}}
{{- $token = $found | default (randAlphaNum 48) -}}
{{- end -}}
{{- if lt (len $token) 16 -}}
{{- fail (printf "the monitor's intake token (Secret %s, key %s) is shorter than 16 characters: the monitor refuses it" $name $t.secretKey) -}}
{{- end -}}
{{- $_ := set $t "resolved" $token -}}
{{- end -}}
{{- $t.resolved -}}
{{- end -}}

{{/* The bid filter's payload-logger URL: the monitor's Service with the intake token as `?token=` (KServe's agent
cannot add an Authorization header). This URL is a secret: it is in the InferenceService's spec. */}}
{{- define "bidflow.monitorLoggerUrl" -}}
{{- printf "%s?token=%s" (include "bidflow.monitorUrl" .) (include "bidflow.monitorToken" . | urlquery) -}}
{{- end -}}

{{/* A NetworkPolicy peer selecting one component's pods (predictor pods carry these labels through
spec.predictor.labels): call with (dict "ctx" $ "component" "bid-filter"). */}}
{{- define "bidflow.podPeer" -}}
- podSelector:
    matchLabels:
      {{- include "bidflow.selectorLabels" . | nindent 6 }}
{{- end -}}
