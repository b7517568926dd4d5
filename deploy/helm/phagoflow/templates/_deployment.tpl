{{/*
A phagoflow service Deployment, running the entry point of the deployable folder
services/<component>/ (copied into the image by deploy/docker/Dockerfile). Arguments (dict):
  root       the top context ($)
  component  ingest | cip | inference | metrics
  values     the component's values
  replicas   replica count, or nil when an autoscaler owns it
  env        extra env (YAML list string)
  volumes    extra volumes (YAML list string)
  mounts     extra volume mounts (YAML list string)
  init       init containers (YAML list string)
*/}}
{{- define "phagoflow.serviceDeployment" -}}
{{- $root := .root -}}
{{- $ctx := dict "root" $root "component" .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "phagoflow.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- include "phagoflow.componentLabels" $ctx | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" .replicas) }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- if eq .component "ingest" "metrics" }}
  strategy:
    type: Recreate  # one instance at a time: ingest owns the share scan, metrics its snapshot
  {{- end }}
  selector:
    matchLabels: {{- include "phagoflow.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels: {{- include "phagoflow.selectorLabels" $ctx | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    spec:
      serviceAccountName: {{ include "phagoflow.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets: {{- range . }}
        - name: {{ . }}
      {{- end }}
      {{- end }}
      {{- include "phagoflow.podSecurityContext" $root | nindent 6 }}
      terminationGracePeriodSeconds: 60
      {{- with .init }}
      initContainers: {{- . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "phagoflow.image" (dict "image" $root.Values.image "root" $root) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          # the deployable's entry point (services/<component>/main.py = `phagoflow serve <component>`)
          command: ["python", {{ include "phagoflow.entrypoint" .component | quote }}]
          {{- include "phagoflow.containerSecurityContext" $root | nindent 10 }}
          ports:
            - name: http
              containerPort: {{ .values.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "phagoflow.fullname" $root }}
          env: {{- include "phagoflow.commonEnv" $root | nindent 12 }}
            {{- with .env }}{{ . | nindent 12 }}{{ end }}
          {{- include "phagoflow.probes" . | nindent 10 }}
          resources: {{- toYaml .values.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with .mounts }}{{ . | nindent 12 }}{{ end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 1Gi
        {{- with .volumes }}{{ . | nindent 8 }}{{ end }}
      {{- with .values.nodeSelector }}
      nodeSelector: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .values.tolerations }}
      tolerations: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if .values.affinity }}
      affinity: {{- toYaml .values.affinity | nindent 8 }}
      {{- else if not (eq .component "ingest" "metrics") }}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 50
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels: {{- include "phagoflow.selectorLabels" $ctx | nindent 20 }}
      {{- end }}
{{- end -}}
