{{/* Helm's own labels, beside the ones config/ sets. */}}
{{- define "redis-operator.labels" -}}
app.kubernetes.io/name: redis-operator
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- define "redis-operator.roleKind" -}}
{{ if .Values.watchNamespaceOnly }}Role{{ else }}ClusterRole{{ end }}
{{- end }}
