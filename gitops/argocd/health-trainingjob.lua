-- Argo CD health check for aimass TrainingJobs (aimass.dev/v1alpha1), read from status.phase and
-- status.conditions as the operator writes them. Argo runs this in gopher-lua (Lua 5.1).
--   Healthy     the job Succeeded
--   Degraded    the job Failed, or a worker is stuck on something a person must fix
--               (image cannot be pulled, crash loop, missing Secret or config)
--   Suspended   spec.suspend is true and the workers are gone
--   Progressing everything else: not yet seen by the operator, pending, running, restarting,
--               or waiting for a node (a cluster autoscaler may still add one)
local hs = {}

-- Running=False reasons that never clear without a change from the user.
local stuck_reasons = {
  ImagePullBackOff = true,
  CrashLoopBackOff = true,
  CreateContainerConfigError = true,
}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, item in ipairs(status.conditions) do
    if item.type == kind then
      return item
    end
  end
  return nil
end

local function describe(item, fallback)
  if item == nil then
    return fallback
  end
  local text = item.reason or fallback
  if item.message ~= nil and item.message ~= "" then
    text = text .. ": " .. item.message
  end
  return text
end

local function progress(status)
  local p = status.progress
  if p == nil or p.epoch == nil or p.epochs == nil then
    return ""
  end
  local text = " (epoch " .. p.epoch .. "/" .. p.epochs
  if p.valAccuracy ~= nil then
    text = text .. string.format(", val accuracy %.3f", p.valAccuracy)
  end
  return text .. ")"
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the aimass operator to pick up the job"
  return hs
end

local phase = status.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe(condition(status, "Succeeded"), "Succeeded")
  if status.modelURI ~= nil then
    hs.message = hs.message .. "; model at " .. status.modelURI
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(condition(status, "Failed"), "Failed")
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(condition(status, "Suspended"), "Suspended")
else
  local running = condition(status, "Running")
  local restarting = condition(status, "Restarting")
  if running ~= nil and running.status == "False" and stuck_reasons[running.reason] then
    hs.status = "Degraded"
    hs.message = describe(running, phase)
  elseif restarting ~= nil and restarting.status == "True" then
    hs.status = "Progressing"
    hs.message = describe(restarting, "Restarting") .. progress(status)
  else
    hs.status = "Progressing"
    hs.message = describe(running, phase) .. progress(status)
  end
end
return hs
