{{/* Names and labels shared by every object of the chart. */}}

{{- define "rerank-sidecar.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rerank-sidecar.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 58 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 58 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "rerank-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rerank-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rerank-sidecar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "rerank-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rerank-sidecar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rerank-sidecar.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret that holds the API keys. */}}
{{- define "rerank-sidecar.apiKeySecret" -}}
{{- default (printf "%s-api-keys" (include "rerank-sidecar.fullname" .)) .Values.apiKey.existingSecret }}
{{- end }}

{{/* HTTPS when the faces serve TLS (kubelet does not verify the certificate of an HTTPS probe). */}}
{{- define "rerank-sidecar.scheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
Readiness: models loaded and warmed up. Plaintext: the gRPC health service (what the clients'
balancing relies on). TLS: GET /ready over HTTPS. Mutual TLS (the kubelet has no client
certificate): rerank_sidecar_ready read from the plaintext metrics port inside the pod.
*/}}
{{- define "rerank-sidecar.readinessProbe" -}}
{{- if and .Values.tls.enabled .Values.tls.clientAuth }}
exec:
  command:
    - python
    - -c
    - "import sys, urllib.request; page = urllib.request.urlopen('http://127.0.0.1:{{ .Values.ports.metrics }}/metrics', timeout=4).read(); sys.exit(0 if b'rerank_sidecar_ready 1.0' in page else 1)"
{{- else if .Values.tls.enabled }}
httpGet:
  path: /ready
  port: http
  scheme: HTTPS
{{- else }}
grpc:
  port: {{ .Values.ports.grpc }}
{{- end }}
{{- end }}

{{/* Liveness: the process answers (true while the models load). */}}
{{- define "rerank-sidecar.livenessProbe" -}}
{{- if and .Values.tls.enabled .Values.tls.clientAuth }}
tcpSocket:
  port: grpc
{{- else if .Values.http }}
httpGet:
  path: /health
  port: http
  scheme: {{ include "rerank-sidecar.scheme" . }}
{{- else }}
grpc:
  port: {{ .Values.ports.grpc }}
{{- end }}
{{- end }}
