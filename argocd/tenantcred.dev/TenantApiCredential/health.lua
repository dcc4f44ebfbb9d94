-- Argo CD health check for tenantcred.dev/TenantApiCredential.
-- Ready=True -> Healthy; Stalled=True or Degraded=True -> Degraded; anything else -> Progressing.
local hs = { status = "Progressing", message = "Waiting for tenantcred to probe the token" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for tenantcred to observe the latest spec"
  return hs
end
local c = {}
for _, cond in ipairs(obj.status.conditions) do
  c[cond.type] = cond
end
local function describe(cond)
  local text = cond.reason or ""
  if cond.message ~= nil and cond.message ~= "" then
    text = text .. ": " .. cond.message
  end
  return text
end
for _, t in ipairs({ "Stalled", "Degraded" }) do
  if c[t] ~= nil and c[t].status == "True" then
    hs.status = "Degraded"
    hs.message = describe(c[t])
    return hs
  end
end
if c.Ready ~= nil and c.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(c.Ready)
  if c.ExpiringSoon ~= nil and c.ExpiringSoon.status == "True" then
    hs.message = describe(c.ExpiringSoon)
  end
  return hs
end
if c.Ready ~= nil then
  hs.message = describe(c.Ready)
end
return hs
