{{/* Names, labels and the pieces every component's pod shares. */}}

{{- define "clusterport.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clusterport.fullname" -}}
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

{{/* Name of one component's objects: fullname-component (component names are short). */}}
{{- define "clusterport.componentName" -}}
{{- printf "%s-%s" (include "clusterport.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "clusterport.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "clusterport.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "clusterport.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clusterport.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: call with (dict "root" $ "component" "api"). */}}
{{- define "clusterport.componentLabels" -}}
{{ include "clusterport.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "clusterport.componentSelectorLabels" -}}
{{ include "clusterport.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "clusterport.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "clusterport.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "clusterport.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the URLs and keys: the existing one, or the chart's. */}}
{{- define "clusterport.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "clusterport.fullname" . }}
{{- end }}
{{- end }}

{{/*
The encryption keys of the chart's Secret: the given ones, else the key generated at first
install (read back from the Secret: a new key would orphan every stored secret), else a new
one. Memoised in .Values so the release Secret and the migration hook Secret agree.
*/}}
{{- define "clusterport.encryptionKeys" -}}
{{- if not (hasKey .Values "_encryptionKeys") }}
{{- $keys := .Values.encryptionKeys }}
{{- if not $keys }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "clusterport.fullname" .) }}
{{- if and $existing $existing.data (hasKey $existing.data .Values.secrets.keys.encryptionKeys) }}
{{- $keys = index $existing.data .Values.secrets.keys.encryptionKeys | b64dec }}
{{- else }}
{{- /* A Fernet key is 32 random bytes in URL-safe base64. */}}
{{- $keys = randBytes 32 | replace "+" "-" | replace "/" "_" }}
{{- end }}
{{- end }}
{{- $_ := set .Values "_encryptionKeys" $keys }}
{{- end }}
{{- .Values._encryptionKeys }}
{{- end }}

{{/* Fail early, at render time, when the connection settings are missing. */}}
{{- define "clusterport.validate" -}}
{{- if not .Values.secrets.existingSecret }}
{{- if not .Values.database.url }}
{{- fail "database.url is required (postgresql://USER:PASSWORD@HOST:5432/DB), or set secrets.existingSecret to a Secret that holds it" }}
{{- end }}
{{- if not .Values.broker.url }}
{{- fail "broker.url is required (amqp://USER:PASSWORD@HOST:5672/VHOST), or set secrets.existingSecret to a Secret that holds it" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment shared by every server process. */}}
{{- define "clusterport.env" -}}
- name: CLUSTERPORT_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "clusterport.secretName" . }}
      key: {{ .Values.secrets.keys.databaseUrl }}
- name: CLUSTERPORT_BROKER_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "clusterport.secretName" . }}
      key: {{ .Values.secrets.keys.brokerUrl }}
- name: CLUSTERPORT_ENCRYPTION_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "clusterport.secretName" . }}
      key: {{ .Values.secrets.keys.encryptionKeys }}
- name: CLUSTERPORT_LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
- name: CLUSTERPORT_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: CLUSTERPORT_BIND_HOST
  value: "0.0.0.0"
- name: CLUSTERPORT_ALLOW_LOCAL_NETWORK
  value: {{ .Values.config.allowLocalNetwork | quote }}
- name: CLUSTERPORT_API_PORT
  value: {{ .Values.ports.api | quote }}
- name: CLUSTERPORT_AGENT_PORT
  value: {{ .Values.ports.agent | quote }}
- name: CLUSTERPORT_HEALTH_PORT
  value: {{ .Values.ports.health | quote }}
# Workers reach clusters behind an agent through any agent-server replica's proxy (it routes to
# the replica holding the agent); override with config.extraEnv for TLS or another address.
- name: CLUSTERPORT_AGENT_PROXY_INTERNAL_URL
  value: "http://{{ include "clusterport.componentName" (dict "root" . "component" "agent-server") }}:{{ .Values.agentServer.service.proxyPort }}"
{{- with .Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Environment of the agent server only. */}}
{{- define "clusterport.agentServerEnv" -}}
- name: CLUSTERPORT_AGENT_PROXY_PORT
  value: {{ .Values.ports.agentProxy | quote }}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
# Where the other replicas reach this one's proxy when it holds the agent's connection.
- name: CLUSTERPORT_AGENT_ADVERTISE_URL
  value: "http://$(POD_IP):{{ .Values.ports.agentProxy }}"
{{- end }}

{{/* Probes on the health port. */}}
{{- define "clusterport.probes" -}}
livenessProbe:
  httpGet:
    path: /liveness
    port: health
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readiness
    port: health
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end }}

{{/*
Writable scratch space: the root filesystem is read-only, and Python, uvicorn and the Kubernetes
client may still want a temporary directory.
*/}}
{{- define "clusterport.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/clusterport
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "clusterport.volumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  emptyDir: {}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Annotation that rolls the pods when the chart's Secret changes (env from secretKeyRef is only
read at container start).
*/}}
{{- define "clusterport.secretChecksum" -}}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ printf "%s|%s|%s" .Values.database.url .Values.broker.url .Values.encryptionKeys | sha256sum }}
{{- end }}
{{- end }}

{{/*
One server Deployment. Call with (dict "root" $ "component" "api" "values" .Values.api
"command" "api" "ports" (list (dict "name" "http" "port" 8080))).
*/}}
{{- define "clusterport.deployment" -}}
{{- $root := .root }}
{{- $v := .values }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "clusterport.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "clusterport.componentLabels" . | nindent 4 }}
spec:
  {{- if not (and $v.autoscaling $v.autoscaling.enabled) }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "clusterport.componentSelectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "clusterport.componentSelectorLabels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- $annotations := merge (include "clusterport.secretChecksum" $root | fromYaml) (deepCopy $v.podAnnotations) }}
      {{- with $annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "clusterport.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      containers:
        - name: {{ .component }}
          image: {{ include "clusterport.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ .command | quote }}]
          env:
            {{- include "clusterport.env" $root | nindent 12 }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            {{- range .ports }}
            - name: {{ .name }}
              containerPort: {{ .port }}
              protocol: TCP
            {{- end }}
            - name: health
              containerPort: {{ $root.Values.ports.health }}
              protocol: TCP
          {{- include "clusterport.probes" $root | nindent 10 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "clusterport.volumeMounts" $root | nindent 12 }}
      volumes:
        {{- include "clusterport.volumes" $root | nindent 8 }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* HorizontalPodAutoscaler on CPU for one component (same call as clusterport.deployment). */}}
{{- define "clusterport.hpa" -}}
{{- $v := .values }}
{{- if $v.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "clusterport.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "clusterport.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "clusterport.componentName" . }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          {{- if $v.autoscaling.cpu.averageValue }}
          type: AverageValue
          averageValue: {{ $v.autoscaling.cpu.averageValue }}
          {{- else if $v.autoscaling.cpu.averageUtilization }}
          type: Utilization
          averageUtilization: {{ $v.autoscaling.cpu.averageUtilization }}
          {{- else }}
          {{- fail (printf "%s.autoscaling.cpu: set averageValue or averageUtilization" .component) }}
          {{- end }}
{{- end }}
{{- end }}

{{/* PodDisruptionBudget for one component. */}}
{{- define "clusterport.pdb" -}}
{{- $pdb := .values.pdb }}
{{- if $pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "clusterport.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "clusterport.componentLabels" . | nindent 4 }}
spec:
  {{- if $pdb.minAvailable }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "clusterport.componentSelectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}
