{{- define "tenantcred.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tenantcred.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tenantcred.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tenantcred.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tenantcred.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tenantcred.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tenantcred.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tenantcred.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The permissions the controller uses, and nothing more. */}}
{{- define "tenantcred.rules" -}}
- apiGroups: ["tenantcred.dev"]
  resources: ["tenantapicredentials"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["tenantcred.dev"]
  resources: ["tenantapicredentials/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["patch"]
{{- end -}}

{{/* operator.allowedHosts as NetworkPolicy material, read as the operator reads them: the
provider ports (443 and each port a pattern names; anyPort when a name pattern ends in :*), the
address patterns as ipBlocks on their port (443 when none is written, every port for :*), and the
IPv6 patterns that carry an IPv4 address (::ffff:10.0.0.1), which the operator reduces to IPv4
but a NetworkPolicy cannot. A port follows a network's prefix length (10.0.0.0/8:8443) or an
address in brackets ([fd00::1]:8443); a bare IPv6 address has none. */}}
{{- define "tenantcred.allowedHostsEgress" -}}
{{- $ports := list 443 }}
{{- $anyPort := false }}
{{- $nets := list }}
{{- $embedded := list }}
{{- range .Values.operator.allowedHosts }}
{{- $v := lower (trim .) }}
{{- $host := $v }}
{{- $port := "" }}
{{- if contains "/" $v }}
{{- $parts := splitn "/" 2 $v }}
{{- $prefix := $parts._1 }}
{{- if contains ":" $prefix }}
{{- $port = regexFind "[^:]*$" $prefix }}
{{- $prefix = regexFind "^[^:]*" $prefix }}
{{- end }}
{{- $host = printf "%s/%s" ($parts._0 | trimPrefix "[" | trimSuffix "]") $prefix }}
{{- else if hasPrefix "[" $v }}
{{- $host = regexFind "^\\[[^\\]]*\\]" $v | trimPrefix "[" | trimSuffix "]" }}
{{- $port = trimPrefix (printf "[%s]" $host) $v | trimPrefix ":" }}
{{- else if eq (len (splitList ":" $v)) 2 }}
{{- $host = splitList ":" $v | first }}
{{- $port = splitList ":" $v | last }}
{{- end }}
{{- $p := 443 }}
{{- if eq $port "*" }}
{{- $p = 0 }}
{{- else if $port }}
{{- $p = atoi $port }}
{{- $ports = append $ports $p }}
{{- end }}
{{- if regexMatch "^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+(/[0-9]+)?$" $host }}
{{- $nets = append $nets (dict "cidr" (ternary $host (printf "%s/32" $host) (contains "/" $host)) "port" $p) }}
{{- else if regexMatch "^[0-9a-f:]*:[0-9a-f:]*(/[0-9]+)?$" $host }}
{{- $nets = append $nets (dict "cidr" (ternary $host (printf "%s/128" $host) (contains "/" $host)) "port" $p) }}
{{- else if regexMatch "^[0-9a-f:]*:[0-9a-f:.]*(/[0-9]+)?$" $host }}
{{- $embedded = append $embedded . }}
{{- else if eq $p 0 }}
{{- $anyPort = true }}
{{- end }}
{{- end }}
{{- toYaml (dict "ports" ($ports | uniq) "anyPort" $anyPort "nets" $nets "embedded" $embedded) }}
{{- end -}}
