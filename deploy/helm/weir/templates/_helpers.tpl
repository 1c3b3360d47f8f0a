{{/*
The chart's name (nameOverride) and the release's full name (fullnameOverride, else
<release>-<chart>, or the release name alone when it contains the chart's name), at most 40
characters: the StatefulSet's pods carry a controller-revision-hash label of
<fullname>-taskmanager-<10 characters>, and labels are 63 characters at most.
*/}}
{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "weir.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of a component: (dict "ctx" $ "component" "jobmanager") */}}
{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* Labels of every object: (dict "ctx" $ "component" "jobmanager"), component optional. */}}
{{- define "weir.labels" -}}
helm.sh/chart: {{ include "weir.chart" .ctx }}
{{ include "weir.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: weir
{{- end }}

{{/* Labels of a component's pods: its labels, the podLabels, then the selector labels again. */}}
{{- define "weir.podLabels" -}}
{{- $labels := include "weir.labels" . | fromYaml }}
{{- $labels = mustMergeOverwrite $labels (deepCopy (index .ctx.Values .component).podLabels) }}
{{- $labels = mustMergeOverwrite $labels (include "weir.selectorLabels" . | fromYaml) }}
{{- toYaml $labels }}
{{- end }}

{{/* Annotations of a component's pods: podAnnotations, Prometheus', then the config checksum. */}}
{{- define "weir.podAnnotations" -}}
{{- $values := index .ctx.Values .component }}
{{- $annotations := deepCopy $values.podAnnotations }}
{{- if .ctx.Values.metrics.podAnnotations }}
{{- $_ := set $annotations "prometheus.io/scrape" "true" }}
{{- $_ := set $annotations "prometheus.io/port" (ternary "8081" "9249" (eq .component "jobmanager")) }}
{{- $_ := set $annotations "prometheus.io/path" "/metrics" }}
{{- end }}
{{- $_ := set $annotations "checksum/config" (include (print .ctx.Template.BasePath "/configmap.yaml") .ctx | sha256sum) }}
{{- toYaml $annotations }}
{{- end }}

{{- define "weir.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weir.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "weir.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "weir.configMapName" -}}
{{- include "weir.fullname" . }}-config
{{- end }}

{{/* The jobmanager's RPC URL, through its Service (which routes to the ready leader only). */}}
{{- define "weir.jobmanagerRpcUrl" -}}
{{- printf "http://%s-jobmanager:6123" (include "weir.fullname" .) }}
{{- end }}

{{/*
A TOML key: bare when it can be, else quoted.
*/}}
{{- define "weir.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
A TOML value from a scalar: strings quoted (a JSON string is a valid TOML basic string), booleans
bare, numbers bare (whole numbers as integers: values from YAML are float64 in Helm, and
3600000 must not become 3.6e+06).
*/}}
{{- define "weir.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) }}
{{- if eq (float64 (int64 .)) (float64 .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "int32" .) (kindIs "uint64" .) }}{{ . }}
{{- else }}{{ fail (printf "cannot write %v (%s) as a TOML value: only strings, numbers and booleans" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/*
A TOML document from a dict: scalar keys first (sorted), then each map as a table of strings
(storage_options).
*/}}
{{- define "weir.toml" -}}
{{- range $key := keys . | sortAlpha }}
{{- $value := index $ $key }}
{{- if not (kindIs "map" $value) }}
{{ include "weir.tomlKey" $key }} = {{ include "weir.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $key := keys . | sortAlpha }}
{{- $value := index $ $key }}
{{- if and (kindIs "map" $value) $value }}

[{{ include "weir.tomlKey" $key }}]
{{- range $k := keys $value | sortAlpha }}
{{ include "weir.tomlKey" $k }} = {{ index $value $k | toString | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* object_store options of both processes, as JSON (a dict of strings). */}}
{{- define "weir.storageOptions" -}}
{{- $s := .Values.storage }}
{{- $options := dict }}
{{- with $s.endpoint }}{{ $_ := set $options "aws_endpoint" . }}{{ end }}
{{- with $s.region }}{{ $_ := set $options "aws_region" . }}{{ end }}
{{- if $s.allowHttp }}{{ $_ := set $options "aws_allow_http" "true" }}{{ end }}
{{- range $k, $v := $s.options }}
{{- $_ := set $options $k (toString $v) }}
{{- end }}
{{- toJson $options }}
{{- end }}

{{/* jobmanager.toml */}}
{{- define "weir.jobmanagerConfig" -}}
{{- $v := .Values }}
{{- $ha := $v.highAvailability }}
{{- $c := dict
  "rest_addr" "0.0.0.0:8081"
  "rpc_addr" "0.0.0.0:6123"
  "storage" (required "storage.url is required: the jobmanager's storage, e.g. s3://my-bucket/weir" $v.storage.url)
  "plugin_cache_dir" "/var/lib/weir/jobmanager-plugins"
  "high_availability" $ha.enabled
  "ha_lease_ms" $ha.leaseMs
  "ha_renew_interval_ms" $ha.renewIntervalMs
  "ha_renew_deadline_ms" $ha.renewDeadlineMs
  "heartbeat_timeout_ms" $v.jobmanager.heartbeatTimeoutMs
  "max_upload_mb" $v.jobmanager.maxUploadMb
}}
{{- with $v.jobmanager.savepointDir }}{{ $_ := set $c "savepoint_dir" . }}{{ end }}
{{- $restart := dict "type" "restart_strategy" "attempts" "restart_attempts" "delayMs" "restart_delay_ms" "maxDelayMs" "restart_max_delay_ms" "backoffMultiplier" "restart_backoff_multiplier" "resetBackoffAfterMs" "restart_reset_backoff_after_ms" "failureRateIntervalMs" "restart_failure_rate_interval_ms" }}
{{- range $name, $key := $restart }}
{{- if hasKey $v.jobmanager.restartStrategy $name }}
{{- $_ := set $c $key (index $v.jobmanager.restartStrategy $name) }}
{{- end }}
{{- end }}
{{- $options := include "weir.storageOptions" . | fromJson }}
{{- if $options }}{{ $_ := set $c "storage_options" $options }}{{ end }}
{{- $c = mustMergeOverwrite $c (deepCopy $v.jobmanager.config) -}}
# weir-jobmanager's configuration (rendered by the weir chart). WEIR_<KEY> variables override it.
{{- include "weir.toml" $c }}
{{- end }}

{{/* taskmanager.toml */}}
{{- define "weir.taskmanagerConfig" -}}
{{- $v := .Values }}
{{- $c := dict
  "jobmanager_rpc" (include "weir.jobmanagerRpcUrl" .)
  "slots" $v.taskmanager.slots
  "rpc_addr" "0.0.0.0:6122"
  "data_addr" "0.0.0.0:6121"
  "http_addr" "0.0.0.0:9249"
  "plugin_dir" "/var/lib/weir/plugins"
  "state_dir" "/var/lib/weir/state"
  "rocksdb_memory_mb" $v.taskmanager.rocksdbMemoryMb
}}
{{- $options := include "weir.storageOptions" . | fromJson }}
{{- if $options }}{{ $_ := set $c "storage_options" $options }}{{ end }}
{{- $c = mustMergeOverwrite $c (deepCopy $v.taskmanager.config) -}}
# weir-taskmanager's configuration (rendered by the weir chart). WEIR_<KEY> variables override it:
# the pod sets WEIR_ID (the pod's name) and WEIR_ADVERTISED_HOST (the pod's IP).
{{- include "weir.toml" $c }}
{{- end }}

{{/* Environment of every Weir container: WEIR_LOG and the storage credentials. */}}
{{- define "weir.commonEnv" -}}
- name: WEIR_LOG
  value: {{ .Values.logLevel | quote }}
{{- with .Values.storage.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.storage.existingSecretKeys.accessKeyId }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.storage.existingSecretKeys.secretAccessKey }}
{{- end }}
{{- end }}

{{/* An HTTP probe: (dict "path" "/healthz" "port" "rest" "settings" .Values.jobmanager.livenessProbe) */}}
{{- define "weir.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
{{ toYaml (omit .settings "enabled") }}
{{- end }}

{{/* The checks of values a schema cannot express well; a second guard behind the schema. */}}
{{- define "weir.validate" -}}
{{- if and (gt (int .Values.jobmanager.replicas) 1) (not .Values.highAvailability.enabled) }}
{{- fail (printf "jobmanager.replicas is %d but highAvailability.enabled is false: more than one jobmanager needs high availability (one leader, the others stand by)" (int .Values.jobmanager.replicas)) }}
{{- end }}
{{- $ha := .Values.highAvailability }}
{{- if not (and (lt (int64 $ha.renewIntervalMs) (int64 $ha.renewDeadlineMs)) (lt (int64 $ha.renewDeadlineMs) (int64 $ha.leaseMs))) }}
{{- fail (printf "highAvailability: renewIntervalMs (%d) < renewDeadlineMs (%d) < leaseMs (%d) is required" (int64 $ha.renewIntervalMs) (int64 $ha.renewDeadlineMs) (int64 $ha.leaseMs)) }}
{{- end }}
{{- if and .Values.highAvailability.enabled (hasPrefix "file://" .Values.storage.url) (not .Values.highAvailability.allowFileStorage) }}
{{- fail "highAvailability.enabled with a file:// storage.url: each jobmanager pod would elect itself leader of its own directory. Use an object store, or mount one shared filesystem in every jobmanager pod and set highAvailability.allowFileStorage=true" }}
{{- end }}
{{- end }}
