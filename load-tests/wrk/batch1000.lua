-- wrk script: POST /v1/prices with 1,000 locations spread over San Francisco.
-- Usage: wrk -t2 -c16 -d20s --latency -s load-tests/wrk/batch1000.lua http://127.0.0.1:8080
local parts = {}
for i = 0, 999 do
  local lat = 37.70 + (i % 40) * 0.0035
  local lng = -122.50 + math.floor(i / 40) * 0.0065
  parts[#parts + 1] = string.format('{"lat":%.5f,"lng":%.5f}', lat, lng)
end
wrk.method = "POST"
wrk.path = "/v1/prices"
wrk.body = '{"locations":[' .. table.concat(parts, ",") .. ']}'
wrk.headers["Content-Type"] = "application/json"
