{{/*
Naming and labels.
*/}}
{{- define "nanolens.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nanolens.fullname" -}}
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

{{- define "nanolens.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "nanolens.labels" -}}
helm.sh/chart: {{ include "nanolens.chart" . }}
app.kubernetes.io/name: {{ include "nanolens.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nanolens
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "spectra"). */}}
{{- define "nanolens.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nanolens.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "nanolens.componentLabels" -}}
{{ include "nanolens.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "nanolens.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "nanolens.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Deep merge: copies every key of .src into .dst (in place), recursing into maps. Unlike sprig's
mergeOverwrite, false / 0 / "" in .src DO override .dst, so a service can switch off what
serviceDefaults switches on.
*/}}
{{- define "nanolens.merge" -}}
{{- $dst := .dst -}}
{{- range $k, $v := .src -}}
{{- if and (kindIs "map" $v) (kindIs "map" (get $dst $k)) -}}
{{- $_ := include "nanolens.merge" (dict "dst" (get $dst $k) "src" $v) -}}
{{- else -}}
{{- $_ := set $dst $k $v -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Resolve one entry of .Values.services into .out (a dict, filled in place):
serviceDefaults merged with the entry, plus derived keys:
  name, fullname (object name), module, imageRef, threads, config (merged), gpuOn.
Call: {{- $svc := dict -}}{{- $_ := include "nanolens.resolve" (dict "root" $ "name" $name "raw" $raw "out" $svc) -}}
*/}}
{{- define "nanolens.resolve" -}}
{{- $root := .root -}}
{{- $out := .out -}}
{{- $_ := include "nanolens.merge" (dict "dst" $out "src" (deepCopy $root.Values.serviceDefaults)) -}}
{{- $_ := include "nanolens.merge" (dict "dst" $out "src" (deepCopy (default dict .raw))) -}}
{{- $_ := set $out "name" .name -}}
{{- $_ := set $out "fullname" (printf "%s-%s" (include "nanolens.fullname" $root | trunc (int (sub 62 (len .name))) | trimSuffix "-") .name) -}}
{{- $_ := set $out "module" (default (printf "nanolens_%s" .name) $out.module) -}}
{{- $gpuOn := false -}}
{{- if and $out.gpu $out.gpu.enabled -}}{{- $gpuOn = true -}}{{- end -}}
{{- $_ := set $out "gpuOn" $gpuOn -}}
{{- /* One image per flavour for every service; the module is the container's args. */ -}}
{{- $image := $root.Values.image -}}
{{- $repo := $image.repository -}}
{{- $suffix := "" -}}
{{- if $gpuOn -}}
{{- $repo = $image.gpu.repository -}}
{{- $suffix = default "" $image.gpu.tagSuffix -}}
{{- end -}}
{{- $repo = default $repo $out.image.repository -}}
{{- $tag := printf "%s%s" (default (default $root.Chart.AppVersion $image.tag) $out.image.tag) $suffix -}}
{{- $ref := $repo -}}
{{- if $root.Values.image.registry -}}{{- $ref = printf "%s/%s" (trimSuffix "/" $root.Values.image.registry) $repo -}}{{- end -}}
{{- $_ := set $out "imageRef" (printf "%s:%s" $ref $tag) -}}
{{- $config := deepCopy $root.Values.config -}}
{{- $_ := include "nanolens.merge" (dict "dst" $config "src" (default dict $out.config)) -}}
{{- $_ := set $out "config" $config -}}
{{- $threads := int $config.inferenceThreads -}}
{{- if le $threads 0 -}}
{{- $res := default dict $out.resources -}}
{{- $cpu := dig "limits" "cpu" (dig "requests" "cpu" "1" $res) $res | toString -}}
{{- if hasSuffix "m" $cpu -}}
{{- $threads = div (add (trimSuffix "m" $cpu | int) 999) 1000 | int -}}
{{- else -}}
{{- $threads = ceil (float64 $cpu) | int -}}
{{- end -}}
{{- $threads = max $threads 1 | int -}}
{{- end -}}
{{- $_ := set $out "threads" $threads -}}
{{- end -}}

{{/* Object storage connection: endpoint, secure, region, secret name and keys. */}}
{{- define "nanolens.s3" -}}
{{- if eq .Values.objectStorage.mode "external" -}}
endpoint: {{ .Values.objectStorage.external.endpoint | quote }}
secure: {{ .Values.objectStorage.external.secure | toString | quote }}
region: {{ .Values.objectStorage.external.region | quote }}
secret: {{ .Values.objectStorage.external.existingSecret | quote }}
accessKeyKey: {{ .Values.objectStorage.external.accessKeyKey | quote }}
secretKeyKey: {{ .Values.objectStorage.external.secretKeyKey | quote }}
{{- else -}}
endpoint: {{ printf "%s-minio:%d" (include "nanolens.fullname" .) (int .Values.minio.port) | quote }}
secure: "false"
region: {{ .Values.minio.region | quote }}
secret: {{ include "nanolens.minioSecretName" . | quote }}
accessKeyKey: {{ .Values.minio.auth.rootUserKey | quote }}
secretKeyKey: {{ .Values.minio.auth.rootPasswordKey | quote }}
{{- end -}}
{{- end -}}

{{- define "nanolens.minioSecretName" -}}
{{- default (printf "%s-minio" (include "nanolens.fullname" .)) .Values.minio.auth.existingSecret -}}
{{- end -}}

{{/*
Environment of one NanoLens process; call with (dict "root" $ "svc" $svc).
Credentials only ever come from a Secret (valueFrom), never as plain values.
*/}}
{{- define "nanolens.env" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{- $c := $svc.config -}}
{{- $s3 := include "nanolens.s3" $root | fromYaml -}}
- name: NANOLENS_GRPC_PORT
  value: {{ $root.Values.ports.grpc | int | quote }}
- name: NANOLENS_METRICS_PORT
  value: {{ $root.Values.ports.metrics | int | quote }}
- name: NANOLENS_LOG_LEVEL
  value: {{ $c.logLevel | quote }}
- name: NANOLENS_LOG_FORMAT
  value: {{ $c.logFormat | quote }}
- name: NANOLENS_MAX_MESSAGE_MB
  value: {{ $c.maxMessageMB | int | quote }}
- name: NANOLENS_DRAIN_DELAY_SECONDS
  value: {{ $c.drainDelaySeconds | int | quote }}
- name: NANOLENS_GRACE_SECONDS
  value: {{ $c.graceSeconds | int | quote }}
- name: NANOLENS_MAX_BATCH_SIZE
  value: {{ $c.maxBatchSize | int | quote }}
- name: NANOLENS_MAX_BATCH_DELAY_MS
  value: {{ $c.maxBatchDelayMs | int | quote }}
- name: NANOLENS_INFERENCE_THREADS
  value: {{ $svc.threads | int | quote }}
- name: NANOLENS_ORT_PROVIDERS
  value: {{ ternary $svc.gpu.ortProviders $c.ortProviders $svc.gpuOn | quote }}
{{- if $c.modelDir }}
- name: NANOLENS_MODEL_DIR
  value: {{ $c.modelDir | quote }}
{{- end }}
- name: NANOLENS_S3_ENDPOINT
  value: {{ $s3.endpoint | quote }}
- name: NANOLENS_S3_SECURE
  value: {{ $s3.secure | quote }}
- name: NANOLENS_S3_REGION
  value: {{ $s3.region | quote }}
- name: NANOLENS_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s3.secret | quote }}
      key: {{ $s3.accessKeyKey | quote }}
- name: NANOLENS_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s3.secret | quote }}
      key: {{ $s3.secretKeyKey | quote }}
- name: NANOLENS_MODELS_BUCKET
  value: {{ $root.Values.objectStorage.buckets.models | quote }}
{{- if $root.Values.tls.enabled }}
- name: NANOLENS_TLS_CERT
  value: /etc/nanolens/tls/server/tls.crt
- name: NANOLENS_TLS_KEY
  value: /etc/nanolens/tls/server/tls.key
- name: NANOLENS_PROBE_PORT
  value: {{ $root.Values.tls.probePort | int | quote }}
{{- if eq $svc.role "gateway" }}
- name: NANOLENS_UPSTREAM_CA
  value: /etc/nanolens/tls/client/ca.crt
- name: NANOLENS_UPSTREAM_CERT
  value: /etc/nanolens/tls/client/tls.crt
- name: NANOLENS_UPSTREAM_KEY
  value: /etc/nanolens/tls/client/tls.key
{{- else }}
{{- /* mutual TLS: a domain service takes calls only with a client certificate of this CA */}}
- name: NANOLENS_TLS_CLIENT_CA
  value: /etc/nanolens/tls/server/ca.crt
{{- end }}
{{- end }}
{{- if eq $svc.role "gateway" }}
{{- with $root.Values.auth.existingSecret }}
- name: NANOLENS_GATEWAY_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $root.Values.auth.key | quote }}
{{- end }}
- name: NANOLENS_RAW_BUCKET
  value: {{ $root.Values.objectStorage.buckets.raw | quote }}
- name: NANOLENS_RESULTS_BUCKET
  value: {{ $root.Values.objectStorage.buckets.results | quote }}
- name: NANOLENS_MAX_OBJECT_MB
  value: {{ $c.maxObjectMB | int | quote }}
{{- $auto := $root.Values.automation }}
{{- if $auto.enabled }}
- name: NANOLENS_JOBS_DB
{{- if $auto.databaseSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ $auto.databaseSecret | quote }}
      key: {{ $auto.databaseKey | quote }}
{{- else }}
  value: /tmp/nanolens-jobs.sqlite
{{- end }}
- name: NANOLENS_JOB_CONCURRENCY
  value: {{ $auto.concurrency | int | quote }}
{{- if $auto.events.enabled }}
- name: NANOLENS_EVENTS_PORT
  value: {{ $auto.events.port | int | quote }}
- name: NANOLENS_EVENT_RULES
  value: /etc/nanolens/automation/rules.json
- name: NANOLENS_EVENTS_SCAN_SECONDS
  value: {{ $auto.events.scanSeconds | toString | quote }}
- name: NANOLENS_EVENTS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $auto.events.tokenSecret | quote }}
      key: {{ $auto.events.tokenKey | quote }}
{{- end }}
{{- end }}
{{- range $name, $raw := $root.Values.services }}
{{- $up := dict -}}
{{- $_ := include "nanolens.resolve" (dict "root" $root "name" $name "raw" $raw "out" $up) -}}
{{- if and $up.enabled (eq $up.role "domain") }}
- name: {{ printf "NANOLENS_%s_ADDR" (upper $name) }}
  {{- /* the headless Service: the gateway's round_robin policy spreads calls over every pod */}}
  value: {{ printf "dns:///%s-headless:%d" ($up.fullname | trunc 54 | trimSuffix "-") (int $root.Values.ports.grpc) | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- range $k, $v := $svc.env }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- with $svc.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Fail early on combinations the schema cannot express. */}}
{{- define "nanolens.validate" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{- $auto := $root.Values.automation -}}
{{- if and (eq $svc.role "gateway") $auto.enabled (not $auto.databaseSecret) (or $svc.autoscaling.enabled (gt (int $svc.replicas) 1)) -}}
{{- fail "automation.enabled with several gateway replicas needs automation.databaseSecret (a postgresql:// URL): SQLite in each pod would give every replica its own jobs" -}}
{{- end -}}
{{- if and $auto.events.enabled (not $auto.enabled) -}}
{{- fail "automation.events.enabled needs automation.enabled (events become jobs)" -}}
{{- end -}}
{{- if and $auto.events.enabled (not $auto.events.tokenSecret) -}}
{{- fail "automation.events.enabled needs automation.events.tokenSecret (the token MinIO's webhook sends)" -}}
{{- end -}}
{{- if and $root.Values.tls.enabled (or (not $root.Values.tls.serverSecret) (not $root.Values.tls.clientSecret)) -}}
{{- fail "tls.enabled needs tls.serverSecret (the services' certificate) and tls.clientSecret (the gateway's client certificate)" -}}
{{- end -}}
{{- $as := $svc.autoscaling -}}
{{- if and $as.enabled (gt (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- fail (printf "services.%s.autoscaling: minReplicas (%d) > maxReplicas (%d)" $svc.name (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- end -}}
{{- if and $as.enabled (le (int $as.targetCPUUtilizationPercentage) 0) (not $as.queueWait.enabled) (empty $as.extraMetrics) -}}
{{- fail (printf "services.%s.autoscaling: no metric to scale on (CPU target 0, queueWait off, no extraMetrics)" $svc.name) -}}
{{- end -}}
{{- $drain := add (int $svc.config.drainDelaySeconds) (int $svc.config.graceSeconds) -}}
{{- $live := mul (int $svc.probes.liveness.periodSeconds) (int $svc.probes.liveness.failureThreshold) -}}
{{- if le (int $live) (int $drain) -}}
{{- fail (printf "services.%s.probes.liveness: periodSeconds x failureThreshold (%d s) must exceed drainDelaySeconds + graceSeconds (%d s), or a draining pod is killed" $svc.name (int $live) (int $drain)) -}}
{{- end -}}
{{- end -}}
