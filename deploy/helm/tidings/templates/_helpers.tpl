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
{{- /* The stateless lane's pods: a name of their own, so the StatefulSet's selector never takes them. */ -}}
{{- define "tidings.laneLabels" -}}
app.kubernetes.io/name: tidings-stateless
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: tidings
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "tidings.laneSelector" -}}
app.kubernetes.io/name: tidings-stateless
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
