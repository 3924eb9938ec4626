{{/* Names and labels of the agent chart. */}}

{{- define "clusterport-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clusterport-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "clusterport-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "clusterport-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: agent
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "clusterport-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clusterport-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "clusterport-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "clusterport-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "clusterport-agent.secretName" -}}
{{- default (include "clusterport-agent.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* Namespaces the agent gets a Role in when it is not cluster-wide. */}}
{{- define "clusterport-agent.namespaces" -}}
{{- toJson (uniq .Values.rbac.namespaces) }}
{{- end }}

{{- define "clusterport-agent.validate" -}}
{{- if not .Values.serverUrl }}
{{- fail "serverUrl is required: the agent server's websocket URL, e.g. wss://agent.clusterport.example.com" }}
{{- end }}
{{- if not (or (hasPrefix "wss://" .Values.serverUrl) (hasPrefix "ws://" .Values.serverUrl)) }}
{{- fail (printf "serverUrl must start with wss:// (or ws:// for a test setup), got %q" .Values.serverUrl) }}
{{- end }}
{{- if and (hasPrefix "ws://" .Values.serverUrl) (not .Values.insecure) }}
{{- fail "serverUrl is plain ws://: the agent token would cross the network unencrypted. Use wss://, or set insecure=true for a test setup" }}
{{- end }}
{{- if and .Values.rbac.create (not .Values.rbac.clusterWide) (has .Release.Namespace .Values.rbac.namespaces) }}
{{- fail (printf "rbac.namespaces must not list the release namespace %q: it holds the agent's token Secret and Deployment, which proxy users would then reach; install the agent in a namespace of its own" .Release.Namespace) }}
{{- end }}
{{- if and (not .Values.existingSecret) (not .Values.token) }}
{{- fail "token is required (create one with the clusterport API), or set existingSecret to a Secret that holds it" }}
{{- end }}
{{- end }}
