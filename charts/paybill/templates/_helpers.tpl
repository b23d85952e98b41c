{{/* The release's base name: fullnameOverride, else the release name. */}}
{{- define "paybill.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 54 | trimSuffix "-" -}}
{{- end -}}

{{/* The operator's Deployment, ClusterRole and bindings. */}}
{{- define "paybill.operator" -}}
{{- printf "%s-operator" (include "paybill.fullname" .) -}}
{{- end -}}

{{/* The webhook's Service, TLS Secret and configuration. */}}
{{- define "paybill.webhook" -}}
{{- printf "%s-webhook" (include "paybill.fullname" .) -}}
{{- end -}}

{{- define "paybill.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "paybill.operator" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "paybill.selectorLabels" -}}
app.kubernetes.io/name: paybill
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "paybill.labels" -}}
{{ include "paybill.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The image: repository@digest when a digest is set, else repository:tag (the chart's appVersion by default). */}}
{{- define "paybill.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The operator's admission webhooks (name, path, kind, operations): the handlers in handlers/admission.py. */}}
{{- define "paybill.admissionWebhooks" -}}
- {name: stamp.agentworkflows.paybill.dev, kind: Mutating, path: /mutate-agentworkflow, operations: [CREATE]}
- {name: validate.agentworkflows.paybill.dev, kind: Validating, path: /validate-agentworkflow, operations: [CREATE, UPDATE]}
{{- end -}}
