{{/* Names: truncated to 63 characters, no trailing "-" (Bitnami common habit). */}}
{{- define "phagoflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "phagoflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of a component's resources: phagoflow.componentName (dict "root" $ "component" "cip") */}}
{{- define "phagoflow.componentName" -}}
{{- printf "%s-%s" (include "phagoflow.fullname" .root | trunc 50 | trimSuffix "-") .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "phagoflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "phagoflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: phagoflow
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of a component: (dict "root" $ "component" "cip") */}}
{{- define "phagoflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "phagoflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "phagoflow.componentLabels" -}}
{{ include "phagoflow.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "phagoflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "phagoflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Entry point of a deployable in the service image: services/<name>/main.py of the repository,
copied to /opt/phagoflow/services/<name>/ by deploy/docker/Dockerfile. Argument: the name.
*/}}
{{- define "phagoflow.entrypoint" -}}
{{- printf "/opt/phagoflow/services/%s/main.py" . -}}
{{- end -}}

{{/* image reference from a {registry, repository, tag, digest} map: (dict "image" .Values.image "root" $) */}}
{{- define "phagoflow.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if .image.digest -}}
{{- printf "%s/%s@%s" .image.registry .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" .image.registry .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "phagoflow.s3.secretName" -}}
{{- default (printf "%s-s3" (include "phagoflow.fullname" .)) .Values.externalS3.existingSecret -}}
{{- end -}}

{{- define "phagoflow.triton.host" -}}
{{- include "phagoflow.componentName" (dict "root" . "component" "triton") -}}
{{- end -}}

{{- define "phagoflow.triton.grpcUrl" -}}
{{- default (printf "%s:8001" (include "phagoflow.triton.host" .)) .Values.inference.tritonUrl -}}
{{- end -}}

{{- define "phagoflow.tritonModel" -}}
{{- if eq .Values.triton.flavour "tensorrt" -}}autophagy_unet_trt{{- else -}}autophagy_unet{{- end -}}
{{- end -}}

{{/* Security contexts (enabled switch, the "enabled" key removed) */}}
{{- define "phagoflow.podSecurityContext" -}}
{{- if .Values.podSecurityContext.enabled }}
securityContext: {{- omit .Values.podSecurityContext "enabled" | toYaml | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "phagoflow.containerSecurityContext" -}}
{{- if .Values.containerSecurityContext.enabled }}
securityContext: {{- omit .Values.containerSecurityContext "enabled" | toYaml | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Environment every service shares (ServiceSettings, PHAGOFLOW_ prefix) */}}
{{- define "phagoflow.commonEnv" -}}
- name: PHAGOFLOW_KAFKA_BOOTSTRAP
  value: {{ .Values.externalKafka.bootstrap | quote }}
- name: PHAGOFLOW_SESSION_TIMEOUT_MS
  value: {{ .Values.externalKafka.sessionTimeoutMs | quote }}
- name: PHAGOFLOW_HEARTBEAT_INTERVAL_MS
  value: {{ .Values.externalKafka.heartbeatIntervalMs | quote }}
- name: PHAGOFLOW_MAX_POLL_INTERVAL_MS
  value: {{ .Values.externalKafka.maxPollIntervalMs | quote }}
- name: PHAGOFLOW_S3_ENDPOINT
  value: {{ .Values.externalS3.endpoint | quote }}
- name: PHAGOFLOW_S3_SECURE
  value: {{ .Values.externalS3.secure | quote }}
- name: PHAGOFLOW_S3_REGION
  value: {{ .Values.externalS3.region | quote }}
- name: PHAGOFLOW_BUCKET
  value: {{ .Values.externalS3.bucket | quote }}
- name: PHAGOFLOW_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "phagoflow.s3.secretName" . }}
      key: access-key
- name: PHAGOFLOW_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "phagoflow.s3.secretName" . }}
      key: secret-key
- name: PHAGOFLOW_S3_RETRIES
  value: {{ .Values.config.s3Retries | quote }}
- name: PHAGOFLOW_S3_TIMEOUT_S
  value: {{ .Values.config.s3TimeoutS | quote }}
- name: PHAGOFLOW_HTTP_HOST
  value: "0.0.0.0"
- name: PHAGOFLOW_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: PHAGOFLOW_LOG_JSON
  value: "true"
- name: HOME
  value: /tmp
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
{{- with .Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* HTTP probes of a phagoflow service on its port */}}
{{- define "phagoflow.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 5
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 15
  failureThreshold: 4
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  failureThreshold: 3
{{- end -}}

{{/* Validation: gather every message, then fail once (Bitnami's validateValues) */}}
{{- define "phagoflow.validateValues" -}}
{{- $messages := list -}}
{{- $p := int .Values.topics.partitions -}}
{{- range $name := list "cip" "inference" -}}
{{- $c := index $.Values $name -}}
{{- if and $c.enabled $c.autoscaling.enabled (gt (int $c.autoscaling.maxReplicas) $p) -}}
{{- $messages = append $messages (printf "%s.autoscaling.maxReplicas (%d) must be <= topics.partitions (%d): a consumer group cannot use more workers than partitions" $name (int $c.autoscaling.maxReplicas) $p) -}}
{{- end -}}
{{- if and $c.enabled $c.autoscaling.enabled (gt (int $c.autoscaling.minReplicas) (int $c.autoscaling.maxReplicas)) -}}
{{- $messages = append $messages (printf "%s.autoscaling.minReplicas must be <= maxReplicas" $name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.inference.enabled (not .Values.triton.enabled) (not .Values.inference.tritonUrl) -}}
{{- $messages = append $messages "inference.enabled needs triton.enabled=true or inference.tritonUrl" -}}
{{- end -}}
{{- if and .Values.inference.enabled (not (has "cdl" .Values.metrics.methods)) -}}
{{- $messages = append $messages "inference.enabled: add \"cdl\" to metrics.methods so plates wait for CDL results" -}}
{{- end -}}
{{- if and (has "cdl" .Values.metrics.methods) (not .Values.inference.enabled) -}}
{{- $messages = append $messages "metrics.methods has \"cdl\" but inference.enabled=false: plates would never complete" -}}
{{- end -}}
{{- if and .Values.ingest.enabled (eq .Values.ingest.share.type "pvc") (not .Values.ingest.share.existingClaim) -}}
{{- $messages = append $messages "ingest.share.existingClaim: name the PVC of the microscope share (or ingest.share.type=nfs)" -}}
{{- end -}}
{{- if and .Values.ingest.enabled (eq .Values.ingest.share.type "nfs") (not (and .Values.ingest.share.nfs.server .Values.ingest.share.nfs.path)) -}}
{{- $messages = append $messages "ingest.share.nfs.server and ingest.share.nfs.path are required with ingest.share.type=nfs" -}}
{{- end -}}
{{- if and (not .Values.externalS3.existingSecret) (not (and .Values.externalS3.accessKey .Values.externalS3.secretKey)) -}}
{{- $messages = append $messages "externalS3: set existingSecret (keys access-key, secret-key) or both accessKey and secretKey" -}}
{{- end -}}
{{- if and .Values.training.schedule.enabled (not .Values.training.schedule.exports) -}}
{{- $messages = append $messages "training.schedule.exports: list the export folders the scheduled training uses" -}}
{{- end -}}
{{- if and .Values.review.enabled (not .Values.review.resultsClaim) -}}
{{- $messages = append $messages "review.resultsClaim: name the PVC holding the results folder" -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}
