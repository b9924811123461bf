{{/* Names, labels and the shared pod/container pieces of every tradestream workload. */}}

{{- define "tradestream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tradestream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "tradestream.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "tradestream.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tradestream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tradestream.labels" -}}
helm.sh/chart: {{ include "tradestream.chart" . }}
app.kubernetes.io/name: {{ include "tradestream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tradestream
{{- end -}}

{{/* Selector labels of one component: include with (dict "root" $ "component" "features"). */}}
{{- define "tradestream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tradestream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tradestream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tradestream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tradestream.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Secret names: an existing Secret, else the one this chart creates from values. */}}
{{- define "tradestream.postgresSecret" -}}
{{- default (printf "%s-postgres" (include "tradestream.fullname" .)) .Values.postgres.existingSecret -}}
{{- end -}}
{{- define "tradestream.kafkaSaslSecret" -}}
{{- default (printf "%s-kafka-sasl" (include "tradestream.fullname" .)) .Values.kafka.sasl.existingSecret -}}
{{- end -}}
{{- define "tradestream.jwtSecret" -}}
{{- default (printf "%s-jwt" (include "tradestream.fullname" .)) .Values.api.jwt.existingSecret -}}
{{- end -}}

{{/* Checkov skips shared by every workload, with the reason (docs/deploy.md, "Security scan"). */}}
{{- define "tradestream.checkovSkips" -}}
checkov.io/skip1: "CKV_K8S_43=Images are referenced by immutable release tags by default; set image.digest to pin a digest."
checkov.io/skip2: "CKV_K8S_15=IfNotPresent on purpose: release tags are immutable, and Always adds a registry round trip to every start (set image.pullPolicy)."
checkov.io/skip3: "CKV_K8S_35=tradestream reads every setting, credentials included, from environment variables (secretKeyRef); TLS material is mounted as files."
{{- end -}}

{{/* Environment every tradestream container shares: Kafka, registry, Postgres, logging. */}}
{{- define "tradestream.env" -}}
- name: KAFKA_BROKERS
  value: {{ required "kafka.brokers is required (bootstrap servers host:port,...)" .Values.kafka.brokers | quote }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
- name: KAFKA_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: KAFKA_REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | quote }}
- name: KAFKA_RETENTION_MS
  value: {{ .Values.kafka.retentionMs | int64 | quote }}
- name: KAFKA_SESSION_TIMEOUT_MS
  value: {{ .Values.kafka.sessionTimeoutMs | quote }}
{{- with .Values.kafka.properties }}
- name: KAFKA_PROPERTIES
  value: {{ join "," . | quote }}
{{- end }}
{{- if .Values.kafka.sasl.enabled }}
- name: KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "tradestream.kafkaSaslSecret" . }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "tradestream.kafkaSaslSecret" . }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if .Values.kafka.tls.enabled }}
- name: KAFKA_SSL_CA_LOCATION
  value: /etc/tradestream/kafka-tls/{{ .Values.kafka.tls.caKey }}
{{- if .Values.kafka.tls.clientCert }}
- name: KAFKA_SSL_CERTIFICATE_LOCATION
  value: /etc/tradestream/kafka-tls/{{ .Values.kafka.tls.certKey }}
- name: KAFKA_SSL_KEY_LOCATION
  value: /etc/tradestream/kafka-tls/{{ .Values.kafka.tls.keyKey }}
{{- end }}
{{- end }}
- name: SCHEMA_REGISTRY_URL
  value: {{ required "schemaRegistry.url is required" .Values.schemaRegistry.url | quote }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "tradestream.postgresSecret" . }}
      key: {{ .Values.postgres.urlKey }}
- name: TRADESTREAM_PG_MAX_CONNECTIONS
  value: {{ .Values.postgres.maxConnections | quote }}
- name: TRADESTREAM_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: RUST_LOG
  value: {{ .Values.log.level | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tradestream.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tradestream.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Volumes and mounts: /tmp, the pipeline config, Kafka TLS material. */}}
{{/* Include with (dict "root" $ "config" true); hook Jobs pass false: they run before the
ConfigMap (a release resource) exists and do not read it. */}}
{{- define "tradestream.volumes" -}}
{{- $root := .root -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .config }}
- name: config
  configMap:
    name: {{ include "tradestream.fullname" $root }}-config
{{- end }}
{{- if $root.Values.kafka.tls.enabled }}
- name: kafka-tls
  secret:
    secretName: {{ required "kafka.tls.existingSecret is required when kafka.tls.enabled" $root.Values.kafka.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- with $root.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tradestream.volumeMounts" -}}
{{- $root := .root -}}
- name: tmp
  mountPath: /tmp
{{- if .config }}
- name: config
  mountPath: /etc/tradestream/config
  readOnly: true
{{- end }}
{{- if $root.Values.kafka.tls.enabled }}
- name: kafka-tls
  mountPath: /etc/tradestream/kafka-tls
  readOnly: true
{{- end }}
{{- with $root.Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}
