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

{{/* image reference: call with (dict "image" .Values.x.image "ctx" $); the tag defaults to appVersion. */}}
{{- define "bidflow.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .ctx.Chart.AppVersion) -}}
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
