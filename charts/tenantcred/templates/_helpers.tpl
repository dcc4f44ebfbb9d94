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

{{/* operator.allowedHosts as NetworkPolicy material: the provider ports (443 and each port a
pattern names), the address patterns as ipBlocks, and the IPv6 patterns that carry an IPv4
address (::ffff:10.0.0.1), which the operator reduces to IPv4 but a NetworkPolicy cannot. */}}
{{- define "tenantcred.allowedHostsEgress" -}}
{{- $ports := list 443 }}
{{- $nets := list }}
{{- $embedded := list }}
{{- range .Values.operator.allowedHosts }}
{{- $v := lower (trim .) }}
{{- $host := $v }}
{{- $port := "" }}
{{- if regexMatch "^\\[[0-9a-f:.]+\\](:[0-9]+)?$" $v }}
{{- $host = regexFind "^\\[[0-9a-f:.]+\\]" $v | trimPrefix "[" | trimSuffix "]" }}
{{- $port = trimPrefix (printf "[%s]" $host) $v | trimPrefix ":" }}
{{- else if and (not (contains "/" $v)) (lt (len (splitList ":" $v)) 3) (regexMatch ":[0-9]+$" $v) }}
{{- $port = regexFind "[0-9]+$" $v }}
{{- $host = trimSuffix (printf ":%s" $port) $v }}
{{- end }}
{{- if $port }}
{{- $ports = append $ports (atoi $port) }}
{{- end }}
{{- $p := ternary (atoi $port) 0 (ne $port "") }}
{{- if regexMatch "^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+(/[0-9]+)?$" $host }}
{{- $nets = append $nets (dict "cidr" (ternary $host (printf "%s/32" $host) (contains "/" $host)) "port" $p) }}
{{- else if regexMatch "^[0-9a-f:]*:[0-9a-f:]*(/[0-9]+)?$" $host }}
{{- $nets = append $nets (dict "cidr" (ternary $host (printf "%s/128" $host) (contains "/" $host)) "port" $p) }}
{{- else if regexMatch "^[0-9a-f:]*:[0-9a-f:.]*(/[0-9]+)?$" $host }}
{{- $embedded = append $embedded . }}
{{- end }}
{{- end }}
{{- toYaml (dict "ports" ($ports | uniq) "nets" $nets "embedded" $embedded) }}
{{- end -}}
