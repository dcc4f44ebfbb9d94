-- Runs health.lua over sample statuses: `lua health_test.lua` from this folder (CI does).
local here = arg[0]:match("(.*/)") or "./"
local cases = {
  { name = "no status yet", want = "Progressing", obj = { metadata = { generation = 1 } } },
  { name = "probing", want = "Progressing", obj = { metadata = { generation = 1 }, status = { observedGeneration = 1, conditions = {
      { type = "Ready", status = "Unknown", reason = "Probing", message = "waiting for a decisive probe" },
      { type = "Reconciling", status = "True", reason = "Probing", message = "probing" } } } } },
  { name = "valid", want = "Healthy", obj = { metadata = { generation = 2 }, status = { observedGeneration = 2, conditions = {
      { type = "Ready", status = "True", reason = "TokenValid", message = "accepted" },
      { type = "Degraded", status = "False", reason = "AsExpected", message = "" } } } } },
  { name = "valid but expiring", want = "Healthy", message = "ExpiringSoon: soon", obj = { metadata = { generation = 1 }, status = { observedGeneration = 1, conditions = {
      { type = "Ready", status = "True", reason = "TokenValid", message = "accepted" },
      { type = "ExpiringSoon", status = "True", reason = "ExpiringSoon", message = "soon" } } } } },
  { name = "revoked", want = "Degraded", message = "Unauthorized: rejected", obj = { metadata = { generation = 1 }, status = { observedGeneration = 1, conditions = {
      { type = "Ready", status = "False", reason = "Unauthorized", message = "rejected" },
      { type = "Degraded", status = "True", reason = "Unauthorized", message = "rejected" },
      { type = "Stalled", status = "True", reason = "Unauthorized", message = "rejected" } } } } },
  { name = "bad input", want = "Degraded", obj = { metadata = { generation = 1 }, status = { observedGeneration = 1, conditions = {
      { type = "Ready", status = "False", reason = "SecretConflict", message = "foreign" },
      { type = "Stalled", status = "True", reason = "SecretConflict", message = "foreign" } } } } },
  { name = "source missing recovers by itself", want = "Progressing", obj = { metadata = { generation = 1 }, status = { observedGeneration = 1, conditions = {
      { type = "Ready", status = "False", reason = "SourceNotFound", message = "missing" },
      { type = "Degraded", status = "False", reason = "AsExpected", message = "" } } } } },
  { name = "stale generation", want = "Progressing", obj = { metadata = { generation = 3 }, status = { observedGeneration = 2, conditions = {
      { type = "Ready", status = "True", reason = "TokenValid", message = "accepted" } } } } },
}
local failed = 0
for _, case in ipairs(cases) do
  obj = case.obj
  local hs = dofile(here .. "health.lua")
  local ok = hs.status == case.want and (case.message == nil or hs.message == case.message)
  if not ok then
    failed = failed + 1
    print(string.format("FAIL %s: got %s (%s), want %s", case.name, hs.status, hs.message, case.want))
  end
end
print(string.format("%d passed, %d failed", #cases - failed, failed))
os.exit(failed == 0 and 0 or 1)
