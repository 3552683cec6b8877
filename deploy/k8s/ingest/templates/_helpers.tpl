{{/* Object names: "<release>-<chart>" cut to 63 characters, or fullnameOverride. */}}
{{- define "ingest.fullname" -}}
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

{{- define "ingest.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<fullname>-<component>", short enough for a Service name (63) with room for the suffix. */}}
{{- define "ingest.componentName" -}}
{{- printf "%s-%s" (include "ingest.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{- define "ingest.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "ingest.name" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
{{- end -}}

{{/* The labels a component's pods are selected by; never change them in an upgrade (selectors are immutable). */}}
{{- define "ingest.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ingest.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ingest.componentLabels" -}}
{{ include "ingest.labels" .root }}
{{ include "ingest.selectorLabels" . }}
{{- end -}}

{{- define "ingest.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ingest.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ingest.secretName" -}}
{{- default (include "ingest.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{- define "ingest.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{/* "queue-capacity" -> "INGEST_QUEUE_CAPACITY", as the programs map flags to variables. */}}
{{- define "ingest.envName" -}}
{{- printf "INGEST_%s" (. | upper | replace "-" "_" | replace "." "_") -}}
{{- end -}}

{{/* "security.protocol" -> "INGEST_KAFKA__SECURITY_PROTOCOL", the programs' librdkafka pass-through. */}}
{{- define "ingest.kafkaEnvName" -}}
{{- printf "INGEST_KAFKA__%s" (. | upper | replace "." "_") -}}
{{- end -}}

{{/*
Environment both programs share: Kafka (with SASL from the Secret), logging,
and every kafka.properties entry. Takes the root context.
*/}}
{{- define "ingest.commonEnv" -}}
- name: INGEST_KAFKA_BOOTSTRAP
  value: {{ required "kafka.bootstrap is required" .Values.kafka.bootstrap | quote }}
- name: INGEST_KAFKA_TOPIC
  value: {{ required "kafka.topic is required" .Values.kafka.topic | quote }}
- name: INGEST_LOG_LEVEL
  value: {{ .Values.log.level | quote }}
- name: INGEST_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
{{- if .Values.kafka.sasl.enabled }}
- name: INGEST_KAFKA__SASL_MECHANISMS
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: INGEST_KAFKA__SASL_USERNAME
  value: {{ required "kafka.sasl.username is required when kafka.sasl.enabled" .Values.kafka.sasl.username | quote }}
- name: INGEST_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "ingest.secretName" . }}
      key: kafka-sasl-password
{{- end }}
{{- range $k, $v := .Values.kafka.properties }}
{{- if contains "_" $k }}
{{- fail (printf "kafka.properties: %q holds an underscore, which INGEST_KAFKA__* cannot carry" $k) }}
{{- end }}
- name: {{ include "ingest.kafkaEnvName" $k }}
  value: {{ include "ingest.scalar" $v | quote }}
{{- end }}
{{- end -}}

{{/*
A value as the programs read it: YAML numbers reach templates as float64, and
toString would turn 2000000 into "2e+06"; whole numbers are printed as such.
*/}}
{{- define "ingest.scalar" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* settings map -> INGEST_* variables; refuses keys the chart already sets. Takes (dict "settings" ... "reserved" ... "what" ...). */}}
{{- define "ingest.settingsEnv" -}}
{{- range $k, $v := .settings }}
{{- $name := include "ingest.envName" $k }}
{{- if has $name $.reserved }}
{{- fail (printf "%s.settings.%s: set by the chart from other values; use those" $.what $k) }}
{{- end }}
- name: {{ $name }}
  value: {{ include "ingest.scalar" $v | quote }}
{{- end }}
{{- end -}}

{{/* The pod- and container-level parts both Deployments share. */}}
{{- define "ingest.podCommon" -}}
serviceAccountName: {{ include "ingest.serviceAccountName" .root }}
automountServiceAccountToken: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml (.podSecurityContext | default .root.Values.podSecurityContext) | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- with .volumes | default "" | trim }}
  {{- . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
The gateway's Secret volumes (TLS, auth file), as list items for podCommon. Only
the keys the gateway reads are projected; the pod's uid is not root, so the files
stay world-readable inside the container (no other user runs there).
*/}}
{{- define "ingest.gatewayVolumes" -}}
{{- $g := .Values.gateway -}}
{{- if $g.tls.enabled }}
- name: tls
  secret:
    secretName: {{ $g.tls.secretName }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      {{- if ne $g.tls.clientAuth "none" }}
      - key: ca.crt
        path: ca.crt
      {{- end }}
{{- end }}
{{- if $g.spool.enabled }}
- name: spool
  {{- with $g.spool.persistentVolumeClaim.claimName }}
  persistentVolumeClaim:
    claimName: {{ . }}
  {{- else }}
  emptyDir:
    sizeLimit: {{ include "ingest.spoolSizeLimit" $g.spool.maxBytes }}
  {{- end }}
{{- end }}
{{- if $g.auth.fileSecret.name }}
- name: auth-file
  secret:
    secretName: {{ $g.auth.fileSecret.name }}
    items:
      - key: {{ $g.auth.fileSecret.key }}
        path: {{ $g.auth.fileSecret.key }}
{{- end }}
{{- end -}}

{{- define "ingest.podAnnotations" -}}
{{- if not .root.Values.secret.existingSecret }}
checksum/secret: {{ include (print .root.Template.BasePath "/secret.yaml") .root | sha256sum }}
{{- end }}
{{- with .values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Bytes of a Kubernetes memory quantity ("1Gi", "768Mi", "2G", "536870912"); refuses forms it does not read. */}}
{{- define "ingest.bytes" -}}
{{- $q := toString . -}}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 -}}
{{- $n := regexFind "^[0-9]+" $q -}}
{{- $suffix := trimPrefix $n $q -}}
{{- if not $n -}}
{{- fail (printf "memory quantity %q: a whole number with Ki, Mi, Gi, Ti, k, M, G or T, or bytes" $q) -}}
{{- else if eq $suffix "" -}}
{{- $n -}}
{{- else if hasKey $units $suffix -}}
{{- mul (atoi $n) (get $units $suffix) -}}
{{- else -}}
{{- fail (printf "memory quantity %q: a whole number with Ki, Mi, Gi, Ti, k, M, G or T, or bytes" $q) -}}
{{- end -}}
{{- end -}}

{{/* Bytes of a size as the gateway's --spool-max-bytes reads it: bytes, or B, KiB, MiB, GiB, K, M, G (all binary). */}}
{{- define "ingest.spoolBytes" -}}
{{- $q := include "ingest.scalar" . -}}
{{- $units := dict "B" 1 "KiB" 1024 "MiB" 1048576 "GiB" 1073741824 "K" 1024 "M" 1048576 "G" 1073741824 -}}
{{- $n := regexFind "^[0-9]+" $q -}}
{{- $suffix := trimPrefix $n $q -}}
{{- if not $n -}}
{{- fail (printf "gateway.spool.maxBytes %q: bytes, or a whole number with B, KiB, MiB, GiB, K, M or G" $q) -}}
{{- else if eq $suffix "" -}}
{{- $n -}}
{{- else if hasKey $units $suffix -}}
{{- mul (atoi $n) (get $units $suffix) -}}
{{- else -}}
{{- fail (printf "gateway.spool.maxBytes %q: bytes, or a whole number with B, KiB, MiB, GiB, K, M or G" $q) -}}
{{- end -}}
{{- end -}}

{{/*
The spool's emptyDir sizeLimit, in Mi: maxBytes and a quarter more, and 1Mi. The kubelet evicts a
pod whose emptyDir grows past its limit (and the spool goes with it), so the limit must hold what
the gateway writes beyond maxBytes, which counts segment files only: the .ack files, 8 bytes for
each acknowledged record until its segment is deleted (2% of the spool at the 352-byte records
measured in docs/operating.md, 20% at the smallest, 40-byte frames), the lock file, and each
file's last, partly used block of the file system.
*/}}
{{- define "ingest.spoolSizeLimit" -}}
{{- $b := include "ingest.spoolBytes" . | atoi -}}
{{- printf "%dMi" (div (add (div (mul $b 5) 4) 1048576 1048575) 1048576) -}}
{{- end -}}
