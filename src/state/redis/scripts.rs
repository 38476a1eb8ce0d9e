//! The Lua scripts the Redis store runs: each change to an entity is one
//! script, atomic on the server (two replicas updating the same card never
//! lose an increment). On one Redis a batch of payments is one script call
//! ([`OBSERVE`]); on a cluster, where a script may only name keys of one
//! slot, a batch is one [`CLAIM`] per payment, then one script per entity
//! ([`CARD`], [`SHORT`], [`MERCHANT`]) with all of the batch's payments of
//! that entity. They keep the windows exactly as the memory store's
//! `Window`, `LongWindow` and `DelayedWindow` do (the conformance suite
//! checks both), in hashes:
//!
//! - a short window (`…:s`): `c<bucket>` and `a<bucket>` (count and amount
//!   of a 5-minute bucket), `last` (latest event ms), and for IPs and
//!   devices `k<card>` (when each card was last seen);
//! - a long window (`…:l`): `c<hour>`, `a<hour>`, `p<hour>` (peak amount
//!   ratio), `f<hour>` and `s<hour>` (frauds, and frauds that were spikes),
//!   `nh` (newest hour held); a merchant's also `xe`, `xn` and `xs` (its
//!   sums a week back, kept while no write reaches an hour they counted).
//!
//! Numbers are Lua doubles: sums stay exact below 2^53 minor units.

use redis::Script;
use std::sync::LazyLock;

/// Helpers shared by the scripts (bucket arithmetic, the windows).
const COMMON: &str = r#"
local BUCKET, HOUR, DAY = 300000, 3600000, 86400000
local function fmt(n) return string.format('%d', n) end
local function bucket(at) local b = math.floor(at / BUCKET); if b < 0 then b = 0 end; return b end
local function hour(at) local h = math.floor(at / HOUR); if h < 0 then h = 0 end; return h end

-- Adds one event to a short window when `add`, then its counts at `at`:
-- 1 h and 24 h counts, 24 h amount and distinct cards (when `card` windows).
-- The window is read once (HGETALL) and written once (HSET): the event is
-- added to what was read, and the sums below count it.
local function short(key, add, at, amount, card, ttl)
  local flat = redis.call('HGETALL', key)
  local b = bucket(at)
  local cf, af = 'c' .. b, 'a' .. b
  local kf = card and ('k' .. card) or nil
  local last, cpos, apos, kpos = nil, nil, nil, nil
  for i = 1, #flat, 2 do
    local f = flat[i]
    if f == 'last' then last = tonumber(flat[i + 1])
    elseif f == cf then cpos = i
    elseif f == af then apos = i
    elseif f == kf then kpos = i
    end
  end
  if add then
    local w = {}
    local function put(pos, field, value)
      if pos == nil then
        flat[#flat + 1] = field
        flat[#flat + 1] = value
      else
        flat[pos + 1] = value
      end
      w[#w + 1] = field
      w[#w + 1] = value
    end
    put(cpos, cf, fmt((cpos and tonumber(flat[cpos + 1]) or 0) + 1))
    put(apos, af, fmt((apos and tonumber(flat[apos + 1]) or 0) + amount))
    if last == nil or at > last then
      last = at
      w[#w + 1] = 'last'
      w[#w + 1] = fmt(at)
    end
    if kf then
      local seen = kpos and tonumber(flat[kpos + 1]) or nil
      if seen == nil or at > seen then put(kpos, kf, fmt(at)) end
    end
    redis.call('HSET', key, unpack(w))
    redis.call('PEXPIRE', key, ttl)
  end
  if last == nil then return 0, 0, 0, 0 end
  local idx, newest, horizon = bucket(at), bucket(last), last - DAY
  local c1, c24, a24, cards = 0, 0, 0, 0
  local stale, live, oldest, oldest_seen = {}, 0, nil, nil
  for i = 1, #flat, 2 do
    local f = flat[i]
    local kind = string.sub(f, 1, 1)
    local v = tonumber(flat[i + 1])
    if kind == 'c' or kind == 'a' then
      local b = tonumber(string.sub(f, 2))
      if b <= newest - 288 then
        stale[#stale + 1] = f
      elseif b <= idx and b > idx - 288 then
        if kind == 'c' then
          c24 = c24 + v
          if b > idx - 12 then c1 = c1 + v end
        else
          a24 = a24 + v
        end
      end
    elseif kind == 'k' then
      if add and v <= horizon then
        stale[#stale + 1] = f
      else
        live = live + 1
        if oldest_seen == nil or v < oldest_seen then oldest, oldest_seen = f, v end
        if v > at - DAY then cards = cards + 1 end
      end
    end
  end
  if add and live > 64 then
    -- Forget the card seen least recently.
    stale[#stale + 1] = oldest
    if oldest_seen > at - DAY then cards = cards - 1 end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return c1, c24, a24, cards
end

-- Adds one event to a long window (hourly buckets, `horizon` hours kept).
local function long_add(key, at, amount, horizon, ttl)
  local h = hour(at)
  redis.call('HINCRBY', key, 'c' .. h, 1)
  redis.call('HINCRBY', key, 'a' .. h, amount)
  local nh = tonumber(redis.call('HGET', key, 'nh') or nil)
  if nh == nil or h > nh then redis.call('HSET', key, 'nh', fmt(h)) end
  redis.call('PEXPIRE', key, ttl)
end

-- Sums over the hours in (end - days, end] for 1, 7 and 30 days, where end
-- is the hour of `at` less `delay` days: {count, amount, frauds,
-- spike frauds, peak, oldest plain-fraud hour or -1} each. Hours past the
-- horizon of the newest are forgotten.
local function trailing(key, at, delay, horizon)
  local sums = {}
  for d = 1, 3 do sums[d] = {0, 0, 0, 0, 0, -1} end
  local nh = tonumber(redis.call('HGET', key, 'nh') or nil)
  if nh == nil then return sums end
  local e = hour(at) - 24 * delay
  local days = {1, 7, 30}
  local flat = redis.call('HGETALL', key)
  local stale, frauds, spikes = {}, {}, {}
  for i = 1, #flat, 2 do
    local f = flat[i]
    local kind = string.sub(f, 1, 1)
    if kind ~= 'n' and kind ~= 'x' then
      local h = tonumber(string.sub(f, 2))
      local v = tonumber(flat[i + 1])
      if h <= nh - horizon then
        stale[#stale + 1] = f
      elseif h <= e and h > e - 720 then
        if kind == 'f' then frauds[h] = v elseif kind == 's' then spikes[h] = v end
        for d = 1, 3 do
          if h > e - 24 * days[d] then
            local s = sums[d]
            if kind == 'c' then s[1] = s[1] + v
            elseif kind == 'a' then s[2] = s[2] + v
            elseif kind == 'f' then s[3] = s[3] + v
            elseif kind == 's' then s[4] = s[4] + v
            elseif kind == 'p' then if v > s[5] then s[5] = v end
            end
          end
        end
      end
    end
  end
  for h, f in pairs(frauds) do
    if f > (spikes[h] or 0) then
      for d = 1, 3 do
        local s = sums[d]
        if h > e - 24 * days[d] and (s[6] < 0 or h < s[6]) then s[6] = h end
      end
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return sums
end

-- A merchant's sums a week back (`trailing` with `delay` days), kept in its
-- window's hash ('xe' and 'xn': the end hour and the newest hour they were
-- read at; 'xs': the sums) until a write reaches an hour they counted: the
-- window, up to 888 hours of buckets, is read whole once an hour rather
-- than at every payment.
local function delayed(key, at, delay, horizon)
  local e = hour(at) - 24 * delay
  local x = redis.call('HMGET', key, 'xe', 'xn', 'xs', 'nh')
  if x[1] and x[3] and x[4] and tonumber(x[1]) == e and x[2] == x[4] then
    local sums, i = {{}, {}, {}}, 0
    for v in string.gmatch(x[3], '%S+') do
      sums[math.floor(i / 6) + 1][i % 6 + 1] = tonumber(v)
      i = i + 1
    end
    return sums
  end
  local sums = trailing(key, at, delay, horizon)
  local nh = redis.call('HGET', key, 'nh')
  if nh then
    local parts = {}
    for d = 1, 3 do
      for j = 1, 6 do parts[#parts + 1] = fmt(sums[d][j]) end
    end
    redis.call('HSET', key, 'xe', fmt(e), 'xn', nh, 'xs', table.concat(parts, ' '))
  end
  return sums
end

-- Drops a merchant's kept sums when a write reaches hour `h`, which they
-- may have counted.
local function touched(key, h)
  local xe = tonumber(redis.call('HGET', key, 'xe') or nil)
  if xe ~= nil and h <= xe then redis.call('HDEL', key, 'xe', 'xn', 'xs') end
end

-- Exact integer arithmetic on doubles: non-negative integers below 2^53
-- as three base-2^24 limbs, their products as six.
local LIMB, U32 = 16777216, 4294967295
local function limbs(x)
  local l0 = x % LIMB
  x = (x - l0) / LIMB
  local l1 = x % LIMB
  return {l0, l1, (x - l1) / LIMB}
end
local function product(x, y)
  local a, b, r = limbs(x), limbs(y), {0, 0, 0, 0, 0, 0}
  for i = 1, 3 do
    for j = 1, 3 do r[i + j - 1] = r[i + j - 1] + a[i] * b[j] end
  end
  for i = 1, 5 do
    local carry = math.floor(r[i] / LIMB)
    r[i] = r[i] - carry * LIMB
    r[i + 1] = r[i + 1] + carry
  end
  return r
end
local function above(p, q)
  for i = 6, 1, -1 do
    if p[i] ~= q[i] then return p[i] > q[i] end
  end
  return false
end
-- floor(x * y / d), at most U32 (x, y, d integers below 2^53, d > 0): the
-- quotient in doubles is within one of the truth, and checked exactly.
local function muldiv(x, y, d)
  local k = math.floor(x * y / d)
  if k > U32 + 2 then return U32 end
  local n = product(x, y)
  while k > 0 and above(product(k, d), n) do k = k - 1 end
  while not above(product(k + 1, d), n) do k = k + 1 end
  if k > U32 then return U32 end
  return k
end

-- A payment's amount over its card's mean amount in the 30 days before it,
-- in thousandths (`features::card_amount_ratio`), from the card's 30-day
-- sums with the payment in them; 0 when there is nothing to compare with.
local function amount_ratio(amount, days30)
  local count, before = days30[1] - 1, days30[2] - amount
  if count <= 0 or before <= 0 then return 0 end
  return muldiv(amount, count * 1000, before)
end

-- Whether the hour of `at` is held by the long window `key`.
local function held(key, at, horizon)
  local h = hour(at)
  local nh = tonumber(redis.call('HGET', key, 'nh') or nil)
  return nh ~= nil and h > nh - horizon and redis.call('HEXISTS', key, 'c' .. h) == 1, h
end

-- Raises the peak amount ratio of the hour of `at` in the card's long
-- window `key` to `ratio`, if that hour is held.
local function raise_peak(key, at, ratio, horizon)
  local ok, h = held(key, at, horizon)
  if ok then
    local peak = tonumber(redis.call('HGET', key, 'p' .. h) or '0')
    if ratio > peak then redis.call('HSET', key, 'p' .. h, fmt(ratio)) end
  end
end

-- The spike flag of `ratio` ('1' from `spike_ratio` on).
local function spike_of(ratio, spike_ratio)
  if ratio >= spike_ratio then return '1' end
  return '0'
end
"#;

/// Records a batch of payments and returns their velocity.
///
/// KEYS: watermark, lists version, the indexes of cards, emails, IPs,
/// devices, merchants and payments, then per payment: its record, card
/// short, card long, email, IP, device and merchant windows.
/// ARGV: payments, payment TTL, short TTL, card TTL, merchant TTL, card
/// horizon hours, merchant horizon hours, spike ratio (0: no ratios), then
/// per payment:
/// time, amount,
/// and the keys (hex, empty when none) of its card, email, IP, device and
/// merchant.
/// With a spike ratio (ARGV[8] > 0), each new payment with a card also
/// records its amount ratio (as [`RATIO`] does, with
/// `features::card_amount_ratio`'s value, a spike from that ratio on) once
/// its windows are read, so that the next payment of the card, in this
/// batch or on any replica, sees it.
/// Returns the lists version, then per payment 48 numbers: first, card 1 h
/// and 24 h counts and 24 h amount, email 1 h and 24 h, IP 1 h, 24 h and
/// cards, device 1 h, 24 h and cards, then the card's 1, 7 and 30 days and
/// the merchant's, 6 numbers each.
const OBSERVE: &str = r#"
local n = tonumber(ARGV[1])
local pay_ttl, short_ttl, card_ttl, merchant_ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local card_h, merchant_h = tonumber(ARGV[6]), tonumber(ARGV[7])
local spike_ratio = tonumber(ARGV[8])
local out = {}
out[1] = tonumber(redis.call('GET', KEYS[2]) or '0')
local wm = tonumber(redis.call('GET', KEYS[1]) or nil)
local ix_card, ix_email, ix_ip, ix_device, ix_merchant, ix_pay = KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
-- Index entries of the batch, added with one ZADD per index at the end.
local adds = {}
local function index(ix, score, member)
  local t = adds[ix]
  if t == nil then t = {}; adds[ix] = t end
  t[#t + 1] = score
  t[#t + 1] = member
end
for p = 0, n - 1 do
  local k, a = 8 + p * 7, 8 + p * 7
  local at, amount = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local card, email, ip, device, merchant = ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local first = redis.call('EXISTS', KEYS[k + 1]) == 0
  if first then
    local rec = {'at', fmt(at), 'amt', fmt(amount), 'lab', '0', 'r', '0', 'sp', '0'}
    for _, kv in ipairs({{'c', card}, {'e', email}, {'i', ip}, {'d', device}, {'m', merchant}}) do
      if kv[2] ~= '' then rec[#rec + 1] = kv[1]; rec[#rec + 1] = kv[2] end
    end
    redis.call('HSET', KEYS[k + 1], unpack(rec))
    redis.call('PEXPIRE', KEYS[k + 1], pay_ttl)
    index(ix_pay, fmt(at), string.sub(KEYS[k + 1], -33, -2))
    if wm == nil or at > wm then wm = at end
  end
  local r = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
  if not first then r[1] = 0 end
  local card_days, merchant_days
  if card ~= '' then
    r[2], r[3], r[4] = short(KEYS[k + 2], first, at, amount, nil, card_ttl)
    if first then
      long_add(KEYS[k + 3], at, amount, card_h, card_ttl)
      index(ix_card, fmt(at), card)
    end
    card_days = trailing(KEYS[k + 3], at, 0, card_h)
    if first and spike_ratio > 0 then
      local ratio = amount_ratio(amount, card_days[3])
      if ratio > 0 then
        redis.call('HSET', KEYS[k + 1], 'r', fmt(ratio), 'sp', spike_of(ratio, spike_ratio))
        raise_peak(KEYS[k + 3], at, ratio, card_h)
      end
    end
  end
  if merchant ~= '' then
    if first then
      long_add(KEYS[k + 7], at, amount, merchant_h, merchant_ttl)
      touched(KEYS[k + 7], hour(at))
      index(ix_merchant, fmt(hour(at) * HOUR), merchant)
    end
    merchant_days = delayed(KEYS[k + 7], at, 7, merchant_h)
  end
  local with_card = nil
  if card ~= '' then with_card = card end
  if email ~= '' then
    r[5], r[6] = short(KEYS[k + 4], first, at, amount, nil, short_ttl)
    if first then index(ix_email, fmt(at), email) end
  end
  if ip ~= '' then
    local _
    r[7], r[8], _, r[9] = short(KEYS[k + 5], first, at, amount, with_card, short_ttl)
    if first then index(ix_ip, fmt(at), ip) end
  end
  if device ~= '' then
    local _
    r[10], r[11], _, r[12] = short(KEYS[k + 6], first, at, amount, with_card, short_ttl)
    if first then index(ix_device, fmt(at), device) end
  end
  for _, v in ipairs(r) do out[#out + 1] = v end
  local windows = {card_days, merchant_days}
  for w = 1, 2 do
    local days = windows[w]
    for d = 1, 3 do
      for j = 1, 6 do
        if days then out[#out + 1] = days[d][j] else out[#out + 1] = (j == 6) and -1 or 0 end
      end
    end
  end
end
for ix, t in pairs(adds) do
  if ix == ix_pay then
    redis.call('ZADD', ix, unpack(t))
  else
    -- A key met twice keeps its latest time.
    redis.call('ZADD', ix, 'GT', unpack(t))
  end
end
if wm ~= nil then redis.call('SET', KEYS[1], fmt(wm)) end
return out
"#;

/// Records the amount ratio of a payment on its record, if remembered.
/// KEYS: its record. ARGV: ratio, spike (0/1).
const RATIO_RECORD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'r', ARGV[1], 'sp', ARGV[2])
end
return 0
"#;

/// Raises the peak amount ratio of a payment's hour in its card's long
/// window. KEYS: the card's long window. ARGV: time, ratio, horizon hours.
const RATIO_PEAK: &str = r#"
raise_peak(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return 0
"#;

/// Counts a payment method in the index of methods unless the store is
/// full. KEYS: the index. ARGV: its member, the most methods.
/// Returns -1 when full, else 0.
const RESERVE_METHOD: &str = r#"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return -1
end
redis.call('SADD', KEYS[1], ARGV[1])
return 0
"#;

/// Saves (or replaces) a payment method and tells the replicas.
/// KEYS: its key. ARGV: the encoded method, the channel, the message.
const SAVE_METHOD: &str = r#"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 0
"#;

/// Adds an entry to a list unless its key is there, and tells the replicas.
/// KEYS: the list's entries, its expiries, the lists version.
/// ARGV: the key (hex), the entry (JSON), its expiry (ms, 0 never), the
/// channel, the message after the version.
/// Returns the new lists version, or 0 when the key was there.
const LIST_ADD: &str = r#"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if tonumber(ARGV[3]) > 0 then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
local v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[4], v .. ' ' .. ARGV[5])
return v
"#;

/// Takes a key off a list and tells the replicas.
/// KEYS: the list's entries, its expiries, the lists version.
/// ARGV: the key (hex), the channel, the message after the version.
/// Returns the new lists version, or 0 when the key was not there.
const LIST_REMOVE: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
local v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[2], v .. ' ' .. ARGV[3])
return v
"#;

/// Labels a remembered payment (its merchant's fraud counts follow) and
/// adds block entries to their lists, all at once.
/// KEYS: the payment's record, the lists version, then per entry the
/// list's entries and expiries.
/// ARGV: the label code, the key prefix, the merchant horizon hours, the
/// channel, then per entry: key (hex), entry (JSON), the message after the
/// version.
/// Returns -1 when the payment is unknown, else the 1-based positions of
/// the entries added.
const LABEL: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local code = tonumber(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'lab', 'at', 'm', 'sp')
local old = tonumber(f[1] or '0')
local was = (old == 1 or old == 2) and 1 or 0
local is = (code == 1 or code == 2) and 1 or 0
redis.call('HSET', KEYS[1], 'lab', ARGV[1])
local delta = is - was
if delta ~= 0 and f[3] then
  -- The merchant's key, named as the store names it (one Redis, not a cluster).
  local mkey = ARGV[2] .. '{m:' .. f[3] .. '}:l'
  local ok, h = held(mkey, tonumber(f[2]), tonumber(ARGV[3]))
  if ok then
    local function move(field)
      local v = tonumber(redis.call('HGET', mkey, field) or '0') + delta
      if v < 0 then v = 0 end
      redis.call('HSET', mkey, field, fmt(v))
    end
    move('f' .. h)
    if f[4] == '1' then move('s' .. h) end
    touched(mkey, h)
  end
end
local added = {}
local entries = (#ARGV - 4) / 3
for i = 0, entries - 1 do
  local list, expiries = KEYS[3 + i * 2], KEYS[4 + i * 2]
  local field, entry, msg = ARGV[5 + i * 3], ARGV[6 + i * 3], ARGV[7 + i * 3]
  if redis.call('HSETNX', list, field, entry) == 1 then
    local v = redis.call('INCR', KEYS[2])
    redis.call('PUBLISH', ARGV[4], v .. ' ' .. msg)
    added[#added + 1] = i + 1
  end
end
return added
"#;

/// Takes the keys idle past a horizon off an index, relative to the latest
/// event time recorded (the watermark); while more than the most keys
/// remain, the horizon is halved (down to the least) and again. The keys'
/// windows are forgotten next, each by [`SWEEP_ENTITY`] (if idle still).
/// KEYS: the index. ARGV: the watermark, the horizon, the least horizon
/// (ms), the most keys.
/// Returns each key taken off with the time it was idle up to.
const SWEEP_INDEX: &str = r#"
local wm, horizon = tonumber(ARGV[1]), tonumber(ARGV[2])
local least, most = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local function drop(h)
  local cutoff = fmt(wm - h)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  for _, m in ipairs(gone) do
    out[#out + 1] = m
    out[#out + 1] = cutoff
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff) end
end
drop(horizon)
while redis.call('ZCARD', KEYS[1]) > most and horizon > least do
  horizon = math.max(math.floor(horizon / 2), least)
  drop(horizon)
end
return out
"#;

/// Forgets an entity's keys unless something newer than a time has reached
/// them (a payment that came after the sweep read its index keeps them).
/// KEYS: the entity's keys. ARGV: the time (ms).
/// Returns 1 when they went, else 0.
const SWEEP_ENTITY: &str = r#"
local newest = nil
for _, key in ipairs(KEYS) do
  local f = redis.call('HMGET', key, 'last', 'nh', 'at')
  local t = tonumber(f[1] or nil) or tonumber(f[3] or nil)
  local nh = tonumber(f[2] or nil)
  if nh ~= nil and (t == nil or nh * HOUR > t) then t = nh * HOUR end
  if t ~= nil and (newest == nil or t > newest) then newest = t end
end
if newest ~= nil and newest > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', unpack(KEYS))
return 1
"#;

/// Takes the entries whose expiry has passed off a list, telling the
/// replicas. KEYS: the list's entries, its expiries, the lists version.
/// ARGV: now (ms), the channel, the message prefix (`r <list> `).
/// Returns the keys (hex) of those that went.
const LIST_EXPIRE: &str = r#"
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '1', ARGV[1])
for _, field in ipairs(gone) do
  redis.call('HDEL', KEYS[1], field)
  redis.call('ZREM', KEYS[2], field)
  local v = redis.call('INCR', KEYS[3])
  redis.call('PUBLISH', ARGV[2], v .. ' ' .. ARGV[3] .. field)
end
return gone
"#;

/// Remembers a payment unless it is remembered: whether it is new.
/// KEYS: its record. ARGV: time, amount, TTL, then the keys (hex, empty
/// when none) of its card, email, IP, device and merchant.
/// Returns 1 when new, else 0.
const CLAIM: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local rec = {'at', ARGV[1], 'amt', ARGV[2], 'lab', '0', 'r', '0', 'sp', '0'}
local tags = {'c', 'e', 'i', 'd', 'm'}
for j = 1, 5 do
  if ARGV[3 + j] ~= '' then
    rec[#rec + 1] = tags[j]
    rec[#rec + 1] = ARGV[3 + j]
  end
end
redis.call('HSET', KEYS[1], unpack(rec))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// Counts a card's payments of a batch (those new) and reads its windows
/// at each, in order; with a spike ratio, records each new payment's
/// amount ratio in the card's peaks and returns it (for its record).
/// KEYS: the card's short and long windows. ARGV: payments, TTL, horizon
/// hours, spike ratio (0: no ratios), then per payment: time, amount, new
/// (0/1).
/// Returns per payment 22 numbers: 1 h and 24 h counts, 24 h amount, the
/// 1, 7 and 30 days (6 each, as [`OBSERVE`]), and its amount ratio (0 when
/// none was recorded).
const CARD: &str = r#"
local n, ttl, horizon, spike_ratio = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for p = 0, n - 1 do
  local at, amount, first = tonumber(ARGV[5 + p * 3]), tonumber(ARGV[6 + p * 3]), ARGV[7 + p * 3] == '1'
  local c1, c24, a24 = short(KEYS[1], first, at, amount, nil, ttl)
  if first then long_add(KEYS[2], at, amount, horizon, ttl) end
  local days = trailing(KEYS[2], at, 0, horizon)
  local ratio = 0
  if first and spike_ratio > 0 then
    ratio = amount_ratio(amount, days[3])
    if ratio > 0 then raise_peak(KEYS[2], at, ratio, horizon) end
  end
  out[#out + 1] = c1
  out[#out + 1] = c24
  out[#out + 1] = a24
  for d = 1, 3 do
    for j = 1, 6 do out[#out + 1] = days[d][j] end
  end
  out[#out + 1] = ratio
end
return out
"#;

/// Counts an email's, IP's or device's payments of a batch (those new) and
/// reads its short window at each, in order.
/// KEYS: the short window. ARGV: payments, TTL, then per payment: time,
/// amount, new (0/1), its card (hex; empty: cards are not counted).
/// Returns per payment 1 h and 24 h counts and distinct cards.
const SHORT: &str = r#"
local n, ttl = tonumber(ARGV[1]), ARGV[2]
local out = {}
for p = 0, n - 1 do
  local b = 3 + p * 4
  local at, amount, first, card = tonumber(ARGV[b]), tonumber(ARGV[b + 1]), ARGV[b + 2] == '1', ARGV[b + 3]
  if card == '' then card = nil end
  local c1, c24, _, cards = short(KEYS[1], first, at, amount, card, ttl)
  out[#out + 1] = c1
  out[#out + 1] = c24
  out[#out + 1] = cards
end
return out
"#;

/// Counts a merchant's payments of a batch (those new) and reads its long
/// window, a week back, at each, in order.
/// KEYS: the long window. ARGV: payments, TTL, horizon hours, then per
/// payment: time, amount, new (0/1).
/// Returns per payment the 1, 7 and 30 days, 6 numbers each.
const MERCHANT: &str = r#"
local n, ttl, horizon = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local out = {}
for p = 0, n - 1 do
  local at, amount, first = tonumber(ARGV[4 + p * 3]), tonumber(ARGV[5 + p * 3]), ARGV[6 + p * 3] == '1'
  if first then
    long_add(KEYS[1], at, amount, horizon, ttl)
    touched(KEYS[1], hour(at))
  end
  local days = delayed(KEYS[1], at, 7, horizon)
  for d = 1, 3 do
    for j = 1, 6 do out[#out + 1] = days[d][j] end
  end
end
return out
"#;

/// Raises a number to a value. KEYS: the number. ARGV: the value.
const RAISE: &str = r#"
local v = tonumber(redis.call('GET', KEYS[1]) or nil)
if v == nil or tonumber(ARGV[1]) > v then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"#;

/// Labels a remembered payment (a cluster's first step of a label).
/// KEYS: its record. ARGV: the label code.
/// Returns nothing when it is unknown, else its time, its merchant's key
/// (hex, empty when none) and whether its amount was a spike (0/1).
const LABEL_RECORD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local f = redis.call('HMGET', KEYS[1], 'at', 'm', 'sp')
redis.call('HSET', KEYS[1], 'lab', ARGV[1])
return {f[1], f[2] or '', f[3] or '0'}
"#;

/// Moves a merchant's fraud counts for a labelled payment (a cluster's
/// second step of a label): by what the label changes of what the merchant
/// counted of that payment, kept beside its window, so that the step can
/// be repeated.
/// KEYS: the merchant's long window, what it counted of labelled payments.
/// ARGV: the payment (hash), fraud (0/1), its time, spike (0/1), horizon
/// hours, TTL.
const MERCHANT_LABEL: &str = r#"
local was = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local is = tonumber(ARGV[2])
if is == was then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
local ok, h = held(KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[5]))
if ok then
  local function move(field)
    local v = tonumber(redis.call('HGET', KEYS[1], field) or '0') + is - was
    if v < 0 then v = 0 end
    redis.call('HSET', KEYS[1], field, fmt(v))
  end
  move('f' .. h)
  if ARGV[4] == '1' then move('s' .. h) end
  touched(KEYS[1], h)
end
return 0
"#;

/// Adds a fraud report's block entries to their lists (a cluster's second
/// step of a label). KEYS: the lists version, then per entry the list's
/// entries. ARGV: the channel, then per entry: key (hex), entry (JSON),
/// the message after the version.
/// Returns the 1-based positions of the entries added.
const LABEL_LISTS: &str = r#"
local added = {}
local entries = (#ARGV - 1) / 3
for i = 0, entries - 1 do
  local field, entry, msg = ARGV[2 + i * 3], ARGV[3 + i * 3], ARGV[4 + i * 3]
  if redis.call('HSETNX', KEYS[2 + i], field, entry) == 1 then
    local v = redis.call('INCR', KEYS[1])
    redis.call('PUBLISH', ARGV[1], v .. ' ' .. msg)
    added[#added + 1] = i + 1
  end
end
return added
"#;

/// Records what was decided of payments (KEYS: their records; ARGV: each
/// one's decision, `CODE SCORE PROPENSITY`), kept with the record (and
/// expiring with it) as its `dec` field; a record that has one keeps it (a
/// retry keeps the first), one that expired is not made again. Returns
/// how many were recorded.
const DECIDE: &str = r#"
local n = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    n = n + redis.call('HSETNX', KEYS[i], 'dec', ARGV[i])
  end
end
return n
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

/// [`OBSERVE`].
pub(super) static OBSERVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(OBSERVE));
/// [`RATIO_RECORD`].
pub(super) static RATIO_RECORD_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(RATIO_RECORD));
/// [`RATIO_PEAK`].
pub(super) static RATIO_PEAK_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(RATIO_PEAK));
/// [`RESERVE_METHOD`].
pub(super) static RESERVE_METHOD_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(RESERVE_METHOD));
/// [`SAVE_METHOD`].
pub(super) static SAVE_METHOD_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(SAVE_METHOD));
/// [`LIST_ADD`].
pub(super) static LIST_ADD_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(LIST_ADD));
/// [`LIST_REMOVE`].
pub(super) static LIST_REMOVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(LIST_REMOVE));
/// [`LIST_EXPIRE`].
pub(super) static LIST_EXPIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(LIST_EXPIRE));
/// [`LABEL`].
pub(super) static LABEL_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(LABEL));
/// [`SWEEP_INDEX`].
pub(super) static SWEEP_INDEX_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(SWEEP_INDEX));
/// [`SWEEP_ENTITY`].
pub(super) static SWEEP_ENTITY_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(SWEEP_ENTITY));
/// [`CLAIM`].
pub(super) static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(CLAIM));
/// [`CARD`].
pub(super) static CARD_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(CARD));
/// [`SHORT`].
pub(super) static SHORT_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(SHORT));
/// [`MERCHANT`].
pub(super) static MERCHANT_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(MERCHANT));
/// [`RAISE`].
pub(super) static RAISE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(RAISE));
/// [`LABEL_RECORD`].
pub(super) static LABEL_RECORD_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(LABEL_RECORD));
/// [`MERCHANT_LABEL`].
pub(super) static MERCHANT_LABEL_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(MERCHANT_LABEL));
/// [`LABEL_LISTS`].
pub(super) static LABEL_LISTS_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(LABEL_LISTS));

/// [`DECIDE`].
pub(super) static DECIDE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(DECIDE));

/// Every script, to load into a Redis that lost them (it restarted).
pub(super) fn all() -> [&'static Script; 20] {
    [
        &DECIDE_SCRIPT,
        &OBSERVE_SCRIPT,
        &RATIO_RECORD_SCRIPT,
        &RATIO_PEAK_SCRIPT,
        &RESERVE_METHOD_SCRIPT,
        &SAVE_METHOD_SCRIPT,
        &LIST_ADD_SCRIPT,
        &LIST_REMOVE_SCRIPT,
        &LIST_EXPIRE_SCRIPT,
        &LABEL_SCRIPT,
        &SWEEP_INDEX_SCRIPT,
        &SWEEP_ENTITY_SCRIPT,
        &CLAIM_SCRIPT,
        &CARD_SCRIPT,
        &SHORT_SCRIPT,
        &MERCHANT_SCRIPT,
        &RAISE_SCRIPT,
        &LABEL_RECORD_SCRIPT,
        &MERCHANT_LABEL_SCRIPT,
        &LABEL_LISTS_SCRIPT,
    ]
}
