{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "probefleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; suffixes like -controller or -probe-ap-south are appended. */}}
{{- define "probefleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if contains (include "probefleet.name" .) .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "probefleet.name" .) | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "probefleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "probefleet.selectorLabels" . }}
{{- end }}

{{- define "probefleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "probefleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "probefleet.controllerImage" -}}
{{ .Values.image.controller.repository }}:{{ .Values.image.controller.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "probefleet.probeImage" -}}
{{ .Values.image.probe.repository }}:{{ .Values.image.probe.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The chart's own Secret (database and/or NATS URL when no existingSecret is given). */}}
{{- define "probefleet.secretName" -}}
{{ include "probefleet.fullname" . }}-urls
{{- end }}

{{- define "probefleet.databaseSecret" -}}
{{ .Values.database.existingSecret | default (include "probefleet.secretName" .) }}
{{- end }}

{{- define "probefleet.databaseSecretKey" -}}
{{ ternary .Values.database.existingSecretKey "database-url" (ne .Values.database.existingSecret "") }}
{{- end }}

{{- define "probefleet.natsSecret" -}}
{{ .Values.nats.existingSecret | default (include "probefleet.secretName" .) }}
{{- end }}

{{- define "probefleet.natsSecretKey" -}}
{{ ternary .Values.nats.existingSecretKey "nats-url" (ne .Values.nats.existingSecret "") }}
{{- end }}

{{/* Secret data for whatever has no existingSecret; fails early on a missing URL. */}}
{{- define "probefleet.secretData" -}}
{{- if not .Values.database.existingSecret }}
database-url: {{ required "set database.url or database.existingSecret" .Values.database.url | b64enc | quote }}
{{- end }}
{{- if not .Values.nats.existingSecret }}
nats-url: {{ required "set nats.url or nats.existingSecret" .Values.nats.url | b64enc | quote }}
{{- end }}
{{- end }}

{{- define "probefleet.needsSecret" -}}
{{- if or (not .Values.database.existingSecret) (not .Values.nats.existingSecret) }}true{{ end }}
{{- end }}

{{/* Pod and container security settings shared by the controller and the Job. */}}
{{- define "probefleet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "probefleet.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Secret files mounted under /etc/probefleet/secrets for the controller and the Job. */}}
{{- define "probefleet.controllerSecretVolumes" -}}
- name: database-url
  secret:
    secretName: {{ include "probefleet.databaseSecret" . }}
    items:
      - key: {{ include "probefleet.databaseSecretKey" . }}
        path: database-url
- name: nats-url
  secret:
    secretName: {{ include "probefleet.natsSecret" . }}
    items:
      - key: {{ include "probefleet.natsSecretKey" . }}
        path: nats-url
{{- end }}
