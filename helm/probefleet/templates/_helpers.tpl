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
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if .Values.postgresql.enabled }}
{{- include "probefleet.postgresqlSecret" . }}
{{- else }}
{{- include "probefleet.secretName" . }}
{{- end }}
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

{{/* The NATS URL: the chart's own NATS server when natsServer.enabled. */}}
{{- define "probefleet.natsUrl" -}}
{{- if .Values.natsServer.enabled }}
{{- printf "%s://%s-nats:4222" (ternary "tls" "nats" (ne .Values.nats.trustSecret "")) (include "probefleet.fullname" .) }}
{{- else }}
{{- required "set nats.url or nats.existingSecret" .Values.nats.url }}
{{- end }}
{{- end }}

{{/* The chart's own PostgreSQL's Secret (password and database URL). */}}
{{- define "probefleet.postgresqlSecret" -}}
{{ include "probefleet.fullname" . }}-postgresql
{{- end }}

{{/* Secret data for whatever has no existingSecret; fails early on a missing URL. */}}
{{- define "probefleet.secretData" -}}
{{- if not (or .Values.database.existingSecret .Values.postgresql.enabled) }}
database-url: {{ required "set database.url or database.existingSecret (or postgresql.enabled)" .Values.database.url | b64enc | quote }}
{{- end }}
{{- if not .Values.nats.existingSecret }}
nats-url: {{ include "probefleet.natsUrl" . | b64enc | quote }}
{{- end }}
{{- if not .Values.controller.secrets.existingSecret }}
{{- with .Values.controller.secrets.statusPageSecret }}
status-page-secret: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.controller.secrets.smtpPassword }}
smtp-password: {{ . | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "probefleet.needsSecret" -}}
{{- if include "probefleet.secretData" . }}true{{ end }}
{{- end }}

{{- define "probefleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "probefleet.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/* The controller's secret settings as environment (each key optional). */}}
{{- define "probefleet.controllerSecretEnv" -}}
{{- $secret := .Values.controller.secrets.existingSecret | default (include "probefleet.secretName" .) }}
{{- range $key, $env := dict "status-page-secret" "PROBEFLEET_STATUS_PAGE_SECRET" "smtp-password" "PROBEFLEET_SMTP_PASSWORD" }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end }}

{{/* A TOML value: strings and lists as JSON (a TOML basic string and array), numbers and
booleans as they are. */}}
{{- define "probefleet.tomlValue" -}}
{{- if kindIs "map" . }}
{{- fail "controller.config: nested tables are not supported; give each setting as key: value" }}
{{- else if kindIs "float64" . }}
{{- if eq . (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}
{{- toJson . }}
{{- end }}
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
