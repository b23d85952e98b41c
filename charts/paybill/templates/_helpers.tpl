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

{{/* The Terraform Jobs' ServiceAccount (terraform.executor job): no role, no token. */}}
{{- define "paybill.terraformServiceAccountName" -}}
{{- printf "%s-terraform" (include "paybill.fullname" .) -}}
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

{{/* The operator's admission webhooks, as paybill/handlers/admission.py declares them (CONFIGURATION, the handler
ids, PATH; test_the_webhooks_are_the_ones_the_operator_serves compares): kind, name, path, operations. */}}
{{- define "paybill.admissionConfiguration" -}}admission.paybill.dev{{- end -}}
{{- define "paybill.admissionWebhooks" -}}
- {kind: Mutating, name: stamp-agentworkflow.admission.paybill.dev, path: /admission/stamp-agentworkflow, operations: [CREATE]}
- {kind: Validating, name: validate-agentworkflow.admission.paybill.dev, path: /admission/validate-agentworkflow, operations: [CREATE, UPDATE]}
{{- end -}}
