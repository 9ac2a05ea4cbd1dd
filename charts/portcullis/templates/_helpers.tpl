{{/* Names. */}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portcullis.fullname" -}}
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

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "portcullis.electionId" -}}
{{- default (printf "%s-leader" (include "portcullis.fullname" .)) .Values.controller.electionId }}
{{- end }}

{{- define "portcullis.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Labels: every object gets "portcullis.labels"; pods and their selectors "portcullis.selectorLabels". */}}
{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: portcullis
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The Service whose address goes into Ingress status, as NAMESPACE/NAME; empty when none. */}}
{{- define "portcullis.publishService" -}}
{{- $p := .Values.controller.publishService }}
{{- if and $p.enabled (not .Values.controller.publishStatusAddress) }}
{{- if $p.pathOverride }}
{{- $p.pathOverride }}
{{- else if .Values.service.enabled }}
{{- printf "%s/%s" .Release.Namespace (include "portcullis.fullname" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Seconds a stopping pod may take; fails when the configured value cannot cover the shutdown. */}}
{{- define "portcullis.terminationGracePeriodSeconds" -}}
{{- $s := .Values.shutdown }}
{{- $needed := add $s.preStopSleepSeconds $s.delaySeconds $s.timeoutSeconds }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed 5 }}
{{- else if lt (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least shutdown.preStopSleepSeconds + shutdown.delaySeconds + shutdown.timeoutSeconds (%d), or requests are cut off when a pod stops" (int .Values.terminationGracePeriodSeconds) (int $needed)) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The controller's flags: the chart's, then controller.extraArgs over them, in name order. */}}
{{- define "portcullis.args" -}}
{{- $c := .Values.controller }}
{{- $args := dict }}
{{- $_ := set $args "ingress-class" .Values.ingressClass.name }}
{{- $_ := set $args "election-id" (include "portcullis.electionId" .) }}
{{- $_ := set $args "config" "/etc/portcullis/config.yaml" }}
{{- $_ := set $args "http-addr" (printf "%s:%d" $c.bindAddress (int $c.containerPorts.http)) }}
{{- $_ := set $args "https-addr" (printf "%s:%d" $c.bindAddress (int $c.containerPorts.https)) }}
{{- $_ := set $args "admin-addr" (printf "%s:%d" $c.bindAddress (int $c.containerPorts.admin)) }}
{{- $_ := set $args "log-format" $c.logFormat }}
{{- with $c.logLevel }}{{ $_ := set $args "log-level" . }}{{ end }}
{{- with $c.watchNamespace }}{{ $_ := set $args "watch-namespace" . }}{{ end }}
{{- with .Values.gatewayAPI.addresses }}{{ $_ := set $args "gateway-addresses" . }}{{ end }}
{{- if $c.watchIngressWithoutClass }}{{ $_ := set $args "watch-ingress-without-class" true }}{{ end }}
{{- with $c.publishStatusAddress }}{{ $_ := set $args "publish-status-address" . }}{{ end }}
{{- with include "portcullis.publishService" . }}{{ $_ := set $args "publish-service" . }}{{ end }}
{{- $_ := set $args "shutdown-delay" (printf "%ds" (int .Values.shutdown.delaySeconds)) }}
{{- $_ := set $args "shutdown-timeout" (printf "%ds" (int .Values.shutdown.timeoutSeconds)) }}
{{- range $name, $value := $c.extraArgs }}{{ $_ := set $args $name $value }}{{ end }}
{{- range $name, $value := $args }}
{{- if kindIs "bool" $value }}
{{- if $value }}
- --{{ $name }}
{{- end }}
{{- else if kindIs "slice" $value }}
- {{ printf "--%s=%s" $name (join "," $value) | quote }}
{{- else if kindIs "float64" $value }}
- {{ printf "--%s=%d" $name (int64 $value) | quote }}
{{- else if not (kindIs "invalid" $value) }}
- {{ printf "--%s=%v" $name $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* RBAC rules for the namespaces watched (all of them, or controller.watchNamespace). */}}
{{- define "portcullis.namespacedRules" }}
# Ingresses are watched; of our class, only their status is written (a merge patch).
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses/status]
  verbs: [patch]
# Backends, and certificates (the watch asks only for type kubernetes.io/tls, but RBAC cannot say so).
- apiGroups: [""]
  resources: [services, secrets]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
# Warning Events for bad Ingresses, Secrets and Services (patch: repeats go into the Event's series).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.gatewayAPI.enabled }}
# Gateway API (their CRDs need not be installed): Gateways, routes and ReferenceGrants are watched; the
# leader writes the status of Gateways and routes (patches only), never their spec.
- apiGroups: [gateway.networking.k8s.io]
  resources: [gateways, httproutes, grpcroutes, referencegrants]
  verbs: [get, list, watch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [gateways/status, httproutes/status, grpcroutes/status]
  verbs: [patch]
{{- end }}
{{- if include "portcullis.acmeIssuers" . }}
# ACME (config.acme.issuers is set): issued certificates go into the Ingresses' secretName. Only
# Secrets labelled as Portcullis's are ever replaced, a check RBAC cannot express; never deleted.
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, update]
{{- end }}
{{- end }}

{{/* The names of config.acme.issuers, space-separated; empty when ACME is off. */}}
{{- define "portcullis.acmeIssuers" -}}
{{- keys (dig "acme" "issuers" dict .Values.config) | sortAlpha | join " " }}
{{- end }}

{{/* Checks of combinations the schema cannot express. */}}
{{- define "portcullis.validate" -}}
{{- if and (eq .Values.kind "DaemonSet") .Values.autoscaling.enabled }}
{{- fail "autoscaling.enabled needs kind: Deployment (a DaemonSet runs one pod per node)" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must not be smaller than autoscaling.minReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not (or .Values.autoscaling.targetCPUUtilizationPercentage .Values.autoscaling.targetMemoryUtilizationPercentage)) }}
{{- fail "autoscaling.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- $gw := .Values.gatewayAPI }}
{{- if not $gw.enabled }}
{{- if $gw.addresses }}
{{- fail "gatewayAPI.addresses needs gatewayAPI.enabled (Gateways are only served with the Gateway API's RBAC)" }}
{{- end }}
{{- if $gw.gatewayClass.create }}
{{- fail "gatewayAPI.gatewayClass.create needs gatewayAPI.enabled (a GatewayClass the controller cannot read is never accepted)" }}
{{- end }}
{{- if $gw.installCRDs }}
{{- fail "gatewayAPI.installCRDs needs gatewayAPI.enabled (CRDs whose objects the controller may not read)" }}
{{- end }}
{{- end }}
{{- if and $gw.enabled $gw.installCRDs $gw.gatewayClass.create (not (.Capabilities.APIVersions.Has "gateway.networking.k8s.io/v1/GatewayClass")) }}
{{- fail "gatewayAPI.gatewayClass.create with gatewayAPI.installCRDs: Helm cannot create a GatewayClass in the same release operation that creates its CRD; install with gatewayAPI.installCRDs=true first, then helm upgrade with gatewayAPI.gatewayClass.create=true" }}
{{- end }}
{{- $ns := .Values.controller.watchNamespace }}
{{- $publish := include "portcullis.publishService" . }}
{{- if and .Values.rbac.create $ns $publish }}
{{- $publishNs := first (splitList "/" $publish) }}
{{- if not (or (eq $publishNs $ns) (eq $publishNs .Release.Namespace)) }}
{{- fail (printf "controller.publishService.pathOverride %s: with controller.watchNamespace the chart can only grant reading a Service in %s or %s" $publish $ns .Release.Namespace) }}
{{- end }}
{{- end }}
{{- end }}
