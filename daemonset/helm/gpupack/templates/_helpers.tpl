{{/* Prefix of every object name. */}}
{{- define "gpupack.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "gpupack.devicePlugin.name" -}}{{ include "gpupack.fullname" . }}-device-plugin{{- end -}}
{{- define "gpupack.scheduler.name" -}}{{ include "gpupack.fullname" . }}-scheduler{{- end -}}
{{- define "gpupack.extender.name" -}}{{ include "gpupack.fullname" . }}-scheduler-extender{{- end -}}

{{/* Labels of every object; "component" picks the part. */}}
{{- define "gpupack.labels" -}}
app.kubernetes.io/part-of: gpupack
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- if .component }}
{{ include "gpupack.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
{{- else }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}
{{- end -}}

{{/* Labels a workload selects its pods by. */}}
{{- define "gpupack.selectorLabels" -}}
app.kubernetes.io/name: gpupack-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "gpupack.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The Secret with the extender's certificate and key. */}}
{{- define "gpupack.extender.tlsSecret" -}}
{{- default (printf "%s-tls" (include "gpupack.extender.name" .)) .Values.scheduler.extender.tls.secretName -}}
{{- end -}}

{{/* Where kube-scheduler reaches the extender's verbs. */}}
{{- define "gpupack.extender.urlPrefix" -}}
{{- $ext := .Values.scheduler.extender -}}
{{- if eq .Values.scheduler.mode "extender-only" -}}
{{- printf "%s://%s.%s.svc:%d/gpupack" (ternary "https" "http" $ext.tls.enabled) (include "gpupack.extender.name" .) .Release.Namespace (int $ext.port) -}}
{{- else -}}
{{- printf "http://127.0.0.1:%d/gpupack" (int $ext.port) -}}
{{- end -}}
{{- end -}}

{{/* Combinations of values the schema cannot express; each names the values. */}}
{{- define "gpupack.validate" -}}
{{- $dp := .Values.devicePlugin -}}
{{- if and (eq $dp.backend "simulated") (not $dp.simulated.nodeFile) (not $dp.simulated.existingConfigMap) -}}
{{- fail "devicePlugin.backend=simulated needs devicePlugin.simulated.nodeFile (--set-file devicePlugin.simulated.nodeFile=PATH) or devicePlugin.simulated.existingConfigMap" -}}
{{- end -}}
{{- if and $dp.simulated.nodeFile $dp.simulated.existingConfigMap -}}
{{- fail "set only one of devicePlugin.simulated.nodeFile and devicePlugin.simulated.existingConfigMap" -}}
{{- end -}}
{{- $ext := .Values.scheduler.extender -}}
{{- if ge (int $ext.requestTimeoutMs) (mul (int $ext.httpTimeoutSeconds) 1000 | int) -}}
{{- fail (printf "scheduler.extender.requestTimeoutMs (%d) must be below scheduler.extender.httpTimeoutSeconds (%ds), or kube-scheduler gives up first" (int $ext.requestTimeoutMs) (int $ext.httpTimeoutSeconds)) -}}
{{- end -}}
{{- if eq (int $ext.port) (int $ext.metricsPort) -}}
{{- fail "scheduler.extender.port and scheduler.extender.metricsPort must differ" -}}
{{- end -}}
{{- if and $ext.tls.enabled (ne .Values.scheduler.mode "extender-only") -}}
{{- fail "scheduler.extender.tls.enabled needs scheduler.mode=extender-only: in second-scheduler mode kube-scheduler calls the extender on localhost inside its pod" -}}
{{- end -}}
{{- if and $ext.tls.enabled (not $ext.tls.certManager.enabled) (not $ext.tls.secretName) -}}
{{- fail "scheduler.extender.tls.enabled needs scheduler.extender.tls.secretName (a kubernetes.io/tls Secret) or scheduler.extender.tls.certManager.enabled" -}}
{{- end -}}
{{- if and $ext.tls.certManager.enabled (not $ext.tls.certManager.issuerRef.name) -}}
{{- fail "scheduler.extender.tls.certManager.enabled needs scheduler.extender.tls.certManager.issuerRef.name" -}}
{{- end -}}
{{- if and $ext.tls.certManager.enabled (not $ext.tls.enabled) -}}
{{- fail "scheduler.extender.tls.certManager.enabled needs scheduler.extender.tls.enabled" -}}
{{- end -}}
{{- if and $ext.tls.clientCA.enabled (not $ext.tls.enabled) -}}
{{- fail "scheduler.extender.tls.clientCA.enabled needs scheduler.extender.tls.enabled: client certificates need HTTPS" -}}
{{- end -}}
{{- end -}}
