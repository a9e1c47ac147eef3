{{/* Names and labels. */}}
{{- define "dns01-broker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dns01-broker.fullname" -}}
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

{{- define "dns01-broker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dns01-broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dns01-broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dns01-broker.labels" -}}
helm.sh/chart: {{ include "dns01-broker.chart" . }}
{{ include "dns01-broker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "dns01-broker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dns01-broker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dns01-broker.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where the pod keeps writable state, and where the config file is mounted. */}}
{{- define "dns01-broker.stateDir" -}}/var/lib/dns01-broker{{- end }}
{{- define "dns01-broker.configDir" -}}/etc/dns01-broker{{- end }}
{{- define "dns01-broker.oidcJwksDir" -}}/etc/dns01-broker-oidc{{- end }}
{{- define "dns01-broker.tlsDir" -}}/var/run/secrets/dns01-broker/tls{{- end }}
{{- define "dns01-broker.httpScheme" -}}{{ if .Values.tls.secretName }}HTTPS{{ else }}HTTP{{ end }}{{- end }}

{{/* "true" when the store URL comes from store.existingSecret rather than store.url. */}}
{{- define "dns01-broker.storeUrlFromSecret" -}}
{{- if and .Values.store.existingSecret .Values.store.urlKey }}true{{ end }}
{{- end }}

{{/* Refuse values that would deploy a broken or leaky broker. */}}
{{- define "dns01-broker.validate" -}}
{{- $replicas := int .Values.replicaCount }}
{{- $urlFromSecret := include "dns01-broker.storeUrlFromSecret" . }}
{{- if and (gt $replicas 1) (not $urlFromSecret) (hasPrefix "sqlite:" .Values.store.url) }}
{{- fail (printf "replicaCount=%d: several replicas need a shared PostgreSQL store: set store.existingSecret to an existing Secret whose key store.urlKey (%q) holds postgresql://USER@HOST:5432/DB (SQLite lives inside one pod)" $replicas .Values.store.urlKey) }}
{{- end }}
{{- if and (gt $replicas 1) .Values.persistence.enabled }}
{{- fail (printf "replicaCount=%d: persistence.enabled is for one replica on SQLite; several replicas keep their state in PostgreSQL (store.existingSecret)" $replicas) }}
{{- end }}
{{- if and (gt $replicas 1) .Values.acme.issuesCertificates (not .Values.acme.passphraseSecret) }}
{{- fail (printf "replicaCount=%d: several replicas must share the passphrase of the ACME account keys kept in the store: set acme.passphraseSecret to an existing Secret (key acme.passphraseKey), or acme.issuesCertificates=false if nobody uses POST /v1/certificates" $replicas) }}
{{- end }}
{{- if regexMatch "^[A-Za-z0-9+.-]+://[^/@]*:[^/@]*@" .Values.store.url }}
{{- fail "store.url holds a password: keep secrets out of values: put the URL in a Secret (store.existingSecret, store.urlKey) or only the password (store.passwordKey)" }}
{{- end }}
{{- if and .Values.store.passwordKey (not .Values.store.existingSecret) }}
{{- fail "store.passwordKey names a key of store.existingSecret: set store.existingSecret too" }}
{{- end }}
{{- range .Values.extraEnvFromSecrets }}
{{- if not (and .name .secret .key) }}
{{- fail (printf "extraEnvFromSecrets: every entry needs name, secret and key (got %s)" (toJson .)) }}
{{- end }}
{{- end }}
{{- range .Values.extraSecretMounts }}
{{- if not (and .name .secret .mountPath) }}
{{- fail (printf "extraSecretMounts: every entry needs name, secret and mountPath (got %s)" (toJson .)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The broker's settings: log.format json, then .Values.config, then what the chart itself
decides (listen addresses matching the container ports, state paths, the store URL when it
is not in a Secret).
*/}}
{{- define "dns01-broker.settings" -}}
{{- $state := include "dns01-broker.stateDir" . }}
{{- $owned := dict
  "http" (dict "listen" "0.0.0.0:8080")
  "dns" (dict "listen" (list "0.0.0.0:8053"))
  "auth" (dict "bootstrap_token_file" (printf "%s/admin.token" $state))
  "acme" (dict "passphrase_file" (printf "%s/acme-account.passphrase" $state))
}}
{{- if not (include "dns01-broker.storeUrlFromSecret" .) }}
{{- $_ := set $owned "store" (dict "url" .Values.store.url) }}
{{- end }}
{{- if .Values.tls.secretName }}
{{- $tls := include "dns01-broker.tlsDir" . }}
{{- $_ := set $owned.http "tls_cert_file" (printf "%s/tls.crt" $tls) }}
{{- $_ := set $owned.http "tls_key_file" (printf "%s/tls.key" $tls) }}
{{- end }}
{{- $settings := mergeOverwrite (dict "log" (dict "format" "json")) (deepCopy (default dict .Values.config)) $owned }}
{{- include "dns01-broker.toml.table" (dict "table" $settings "path" list) }}
{{- end }}

{{/*
TOML of a map, called with (dict "table" MAP "path" LIST-OF-KEYS): its plain keys first,
then each map as a [table] and each list of maps as an [[array of tables]], recursively.
Nulls are left out (TOML has none).
*/}}
{{- define "dns01-broker.toml.table" -}}
{{- $path := .path }}
{{- range $key, $value := .table }}
{{- if not (or (kindIs "invalid" $value) (kindIs "map" $value) (include "dns01-broker.toml.isTableArray" $value)) }}
{{ include "dns01-broker.toml.key" $key }} = {{ include "dns01-broker.toml.value" $value }}
{{- end }}
{{- end }}
{{- range $key, $value := .table }}
{{- $keyPath := append $path (include "dns01-broker.toml.key" $key) }}
{{- if kindIs "map" $value }}
{{- if include "dns01-broker.toml.needsHeader" $value }}

[{{ join "." $keyPath }}]
{{- end }}
{{- include "dns01-broker.toml.table" (dict "table" $value "path" $keyPath) }}
{{- else if include "dns01-broker.toml.isTableArray" $value }}
{{- range $value }}

[[{{ join "." $keyPath }}]]
{{- include "dns01-broker.toml.table" (dict "table" . "path" $keyPath) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* A table needs its [header] when it holds plain keys or nothing at all. */}}
{{- define "dns01-broker.toml.needsHeader" -}}
{{- $plain := not . }}
{{- range $key, $value := . }}
{{- if not (or (kindIs "invalid" $value) (kindIs "map" $value) (include "dns01-broker.toml.isTableArray" $value)) }}
{{- $plain = true }}
{{- end }}
{{- end }}
{{- if $plain }}true{{ end }}
{{- end }}

{{- define "dns01-broker.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) }}
{{- $allMaps := true }}
{{- range . }}
{{- if not (kindIs "map" .) }}{{ $allMaps = false }}{{ end }}
{{- end }}
{{- if $allMaps }}true{{ end }}
{{- end }}
{{- end }}

{{- define "dns01-broker.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ include "dns01-broker.toml.string" . }}{{ end }}
{{- end }}

{{/* A JSON string is a TOML basic string, once DEL (allowed raw in JSON) is escaped. */}}
{{- define "dns01-broker.toml.string" -}}
{{- toJson . | replace "\u007f" "\\u007f" }}
{{- end }}

{{/* An inline value: string, number, boolean, [array] or { inline table }. */}}
{{- define "dns01-broker.toml.value" -}}
{{- if kindIs "map" . }}
{{- $items := list }}
{{- range $key, $value := . }}
{{- if not (kindIs "invalid" $value) }}
{{- $items = append $items (printf "%s = %s" (include "dns01-broker.toml.key" $key) (include "dns01-broker.toml.value" $value)) }}
{{- end }}
{{- end }}
{{- if $items }}{ {{ join ", " $items }} }{{ else }}{}{{ end }}
{{- else if kindIs "slice" . }}
{{- $items := list }}
{{- range . }}
{{- if kindIs "invalid" . }}
{{- fail "config: a list holds a null, which TOML cannot say" }}
{{- end }}
{{- $items = append $items (include "dns01-broker.toml.value" .) }}
{{- end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else if kindIs "string" . }}
{{- include "dns01-broker.toml.string" . }}
{{- else }}
{{- toJson . }}
{{- end }}
{{- end }}
