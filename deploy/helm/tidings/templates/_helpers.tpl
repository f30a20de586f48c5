{{- define "tidings.name" -}}{{ .Release.Name }}-tidings{{- end -}}
{{- define "tidings.labels" -}}
app.kubernetes.io/name: tidings
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "tidings.selector" -}}
app.kubernetes.io/name: tidings
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "tidings.secretName" -}}{{ .Values.secrets.existingSecret | default (include "tidings.name" .) }}{{- end -}}
{{- define "tidings.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}
