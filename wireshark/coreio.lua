-- coreio.lua: Wireshark dissector for the CoreIO protocol (live TCP) and coreio-vm recordings.
--
-- Two protocols:
--   coreio     one CoreIO frame (base format and our extensions: hello and
--              capabilities, LREAD/LWRITE large DMA, claim-ack, SHM_MAP).
--              Registered on the tcp.port table for the ports of the
--              preference coreio.tcp_ports, and for "Decode As".
--   coreiorec  one record of a `coreio-vm --record FILE` pcapng file
--              (LINKTYPE_USER0): the 16-byte record header, then a CoreIO
--              frame (dissected by coreio, its direction from the record
--              kind) or a VM event.
-- The layouts follow src/wire/wire.h and wire.c (the C source of truth),
-- docs/protocol.md and docs/wireshark.md. Frames that coreio__wire_decode()
-- would refuse are flagged with an expert error (group malformed).
--
-- Use: tshark -X lua_script:wireshark/coreio.lua -o coreio.tcp_ports:4800 -i lo
-- or copy this file to ~/.local/lib/wireshark/plugins/ (see docs/wireshark.md).

local UNIT = 64
local DATA_OFF = 24
local MAX_SINGLE = 32
local MAX_PAIR = 16
local LARGE_PIECE = 256 * UNIT - UNIT -- 16320
local SHM_MAX_REGIONS = 16
-- COREIO_WIRE_MAGIC 0x3178456f4965726f ("oreIoEx1"), as two 32-bit halves.
local MAGIC_LO = 0x4965726f
local MAGIC_HI = 0x3178456f

local OP = {
	PING = 0x00,
	READ = 0x01,
	WRITE = 0x02,
	READP = 0x03,
	WRITEP = 0x04,
	WRITEA = 0x05,
	WRITEAP = 0x06,
	LREAD = 0x21,
	LWRITE = 0x25,
	IRQ_UPDATE = 0x41,
	SHM_MAP = 0x50,
	RGN_CLAIM = 0xF0,
	RESET = 0xFF,
}
local op_names = {}
for name, code in pairs(OP) do
	op_names[code] = name
end

local errno_names = {
	[1] = "EPERM",
	[2] = "ENOENT",
	[5] = "EIO",
	[12] = "ENOMEM",
	[13] = "EACCES",
	[14] = "EFAULT",
	[16] = "EBUSY",
	[22] = "EINVAL",
	[71] = "EPROTO",
	[110] = "ETIMEDOUT",
}

---------------------------------------------------------------------------
-- coreio: one CoreIO frame
---------------------------------------------------------------------------

local coreio = Proto("coreio", "CoreIO")

local f = {
	dir = ProtoField.string("coreio.dir", "Direction", base.ASCII,
		"vm->client or client->vm"),
	role = ProtoField.string("coreio.role", "Role", base.ASCII,
		"request (sent by the initiator) or answer (sent by the responder)"),
	what = ProtoField.string("coreio.what", "Message", base.ASCII, "What the frame is"),
	op = ProtoField.string("coreio.op", "Operation", base.ASCII, "Opcode name"),
	frame_len = ProtoField.uint32("coreio.frame_len", "Frame length", base.DEC),
	w0 = ProtoField.uint64("coreio.w0", "w[0] header", base.HEX),
	iface = ProtoField.uint8("coreio.iface", "Interface (rid or mid)", base.DEC),
	extra = ProtoField.uint8("coreio.extra", "Extra units (E)", base.DEC),
	error = ProtoField.bool("coreio.error", "Error", 8, nil, 0x40, "w[0] bit 30"),
	origin = ProtoField.bool("coreio.origin", "Origin: client", 8, nil, 0x80,
		"w[0] bit 31: 1 on messages the client initiates and the VM's answers to them"),
	tag = ProtoField.uint32("coreio.tag", "Tag", base.HEX_DEC),
	w1 = ProtoField.uint64("coreio.w1", "w[1] operation", base.HEX),
	opcode = ProtoField.uint8("coreio.opcode", "Opcode", base.HEX, op_names),
	size = ProtoField.uint8("coreio.size", "Size", base.DEC, nil, 0x3f, "w[1] bits 16..21"),
	sid = ProtoField.uint8("coreio.sid", "SID", base.DEC, nil, 0x0f, "w[1] bits 24..27"),
	flags = ProtoField.uint8("coreio.flags", "Access flags", base.HEX, nil, 0xf0,
		"w[1] bits 28..31"),
	flag_ifetch = ProtoField.bool("coreio.flags.ifetch", "IFETCH", 8, nil, 0x20),
	flag_priv = ProtoField.bool("coreio.flags.priv", "PRIV", 8, nil, 0x40),
	flag_secure = ProtoField.bool("coreio.flags.secure", "SECURE", 8, nil, 0x80),
	mask = ProtoField.uint32("coreio.mask", "Byte mask", base.HEX, nil, nil, "w[1] bits 32..63"),
	len = ProtoField.uint32("coreio.len", "Length", base.DEC, nil, nil,
		"LREAD/LWRITE length, w[1] bits 32..63"),
	addr = ProtoField.uint64("coreio.addr", "Address", base.HEX, nil, nil, "w[2]"),
	data = ProtoField.bytes("coreio.data", "Data"),
	data2 = ProtoField.bytes("coreio.data2", "Data (second element)"),
	hello_kind = ProtoField.uint64("coreio.hello.kind", "Hello kind", base.DEC, nil, nil,
		"0 offer, 1 answer"),
	hello_caps = ProtoField.uint64("coreio.hello.caps", "Capabilities", base.HEX),
	cap_large = ProtoField.bool("coreio.hello.caps.large_dma", "LARGE_DMA", 8, nil, 0x01),
	cap_claim = ProtoField.bool("coreio.hello.caps.claim_ack", "CLAIM_ACK", 8, nil, 0x02),
	cap_shm = ProtoField.bool("coreio.hello.caps.shm", "SHM", 8, nil, 0x04),
	hello_version = ProtoField.uint64("coreio.hello.version", "Protocol version", base.DEC),
	irq_iid = ProtoField.uint64("coreio.irq.iid", "IRQ index (iid)", base.DEC),
	irq_level = ProtoField.uint64("coreio.irq.level", "IRQ level", base.DEC),
	claim_errno = ProtoField.uint64("coreio.claim.errno", "Claim refused, errno", base.DEC),
	shm_gpa = ProtoField.uint64("coreio.shm.gpa", "Guest-physical base", base.HEX),
	shm_size = ProtoField.uint64("coreio.shm.size", "Size", base.HEX),
	shm_offset = ProtoField.uint64("coreio.shm.offset", "Offset in the fd", base.HEX),
	shm_index = ProtoField.uint64("coreio.shm.index", "Region index", base.DEC),
	shm_gen = ProtoField.uint64("coreio.shm.gen", "Generation", base.DEC),
	shm_count = ProtoField.uint64("coreio.shm.count", "Regions in the map", base.DEC),
	response_in = ProtoField.framenum("coreio.response_in", "Answer in", base.NONE,
		frametype.RESPONSE),
	response_to = ProtoField.framenum("coreio.response_to", "Request in", base.NONE,
		frametype.REQUEST),
	time = ProtoField.relative_time("coreio.time", "Time since request"),
}
local field_list = {}
for _, v in pairs(f) do
	field_list[#field_list + 1] = v
end
coreio.fields = field_list

local ef_malformed = ProtoExpert.new("coreio.malformed", "Malformed CoreIO frame",
	expert.group.MALFORMED, expert.severity.ERROR)
local ef_warn = ProtoExpert.new("coreio.suspicious", "Suspicious CoreIO frame",
	expert.group.PROTOCOL, expert.severity.WARN)
local ef_error_bit = ProtoExpert.new("coreio.failed", "Operation failed (error bit)",
	expert.group.RESPONSE_CODE, expert.severity.NOTE)
coreio.experts = { ef_malformed, ef_warn, ef_error_bit }

coreio.prefs.tcp_ports = Pref.range("TCP ports", "", "TCP ports of coreio-vm (the listening side)",
	65535)

local tcp_stream_f = Field.new("tcp.stream")

-- Parse a range preference ("4300,4400-4410") into a list of {lo, hi}.
local function parse_range(s)
	local r = {}
	for part in string.gmatch(tostring(s or ""), "[^,%s]+") do
		local lo, hi = string.match(part, "^(%d+)%-(%d+)$")
		if lo then
			r[#r + 1] = { tonumber(lo), tonumber(hi) }
		elseif string.match(part, "^%d+$") then
			r[#r + 1] = { tonumber(part), tonumber(part) }
		end
	end
	return r
end

local port_ranges = {}
local registered_ports = ""

local function in_ports(p)
	for _, r in ipairs(port_ranges) do
		if p >= r[1] and p <= r[2] then
			return true
		end
	end
	return false
end

function coreio.prefs_changed()
	local s = tostring(coreio.prefs.tcp_ports or "")
	if s == registered_ports then
		return
	end
	local t = DissectorTable.get("tcp.port")
	if registered_ports ~= "" then
		t:remove(registered_ports, coreio)
	end
	port_ranges = parse_range(s)
	if s ~= "" then
		t:add(s, coreio)
	end
	registered_ports = s
end

-- Numbers from the little-endian frame.
local function u8(tvb, off)
	return tvb(off, 1):uint()
end
local function u32(tvb, off)
	return tvb(off, 4):le_uint()
end
-- A 64-bit word as a Lua number when it is below 2^53 (enough for every
-- length, index and small value here), else nil.
local function u64n(tvb, off)
	local lo, hi = u32(tvb, off), u32(tvb, off + 4)
	if hi >= 0x200000 then
		return nil
	end
	return hi * 4294967296 + lo
end
local function hex64(tvb, off)
	local s = tvb(off, 8):le_uint64():tohex()
	s = string.gsub(s, "^0+", "")
	return "0x" .. (s == "" and "0" or s)
end

-- Request/answer matching, filled on the first pass: key = conversation,
-- origin, iface, tag, op.
local pending = {}
local links = {} -- "frame:index" -> {req = n, ans = n, req_time = NSTime}

local function link_key(pinfo, idx)
	return tostring(pinfo.number) .. ":" .. tostring(idx)
end

-- Decode and validate one frame. tvb holds exactly the frame (or, in a
-- recording, the record body). from_vm: the VM sent it. conv: a string
-- naming the connection, for request/answer matching. idx: number of the
-- frame inside the packet. Returns a short summary for the Info column.
local function dissect_frame(tvb, pinfo, tree, from_vm, conv, idx)
	local have = tvb:len()
	local flen = (u8(tvb, 1) + 1) * UNIT
	local item_len = have < flen and have or flen
	local t = tree:add(coreio, tvb(0, item_len))
	local problems = {}
	local function bad(msg)
		problems[#problems + 1] = msg
	end

	if have < flen then
		t:add_proto_expert_info(ef_malformed, string.format(
			"frame truncated: E says %d bytes, %d present", flen, have))
		if have < UNIT then
			return "truncated CoreIO frame"
		end
	end

	local b3 = u8(tvb, 3)
	local iface = u8(tvb, 0)
	local extra = u8(tvb, 1)
	local is_err = math.floor(b3 / 64) % 2 == 1
	local origin = b3 >= 0x80
	local tag = u32(tvb, 4)
	local op = u8(tvb, 8)
	local size = u8(tvb, 10) % 64
	local aflags = math.floor(u8(tvb, 11) / 16)
	local mask = u32(tvb, 12)
	local opname = op_names[op] or string.format("0x%02x", op)
	-- The sender initiated the exchange: a request; else an answer.
	local is_request = (from_vm and not origin) or (not from_vm and origin)

	t:add(f.dir, from_vm and "vm->client" or "client->vm"):set_generated()
	t:add(f.frame_len, tvb(0, item_len), flen):set_generated()
	local w0 = t:add_le(f.w0, tvb(0, 8))
	w0:add(f.iface, tvb(0, 1))
	w0:add(f.extra, tvb(1, 1))
	w0:add(f.error, tvb(3, 1))
	w0:add(f.origin, tvb(3, 1))
	w0:add_le(f.tag, tvb(4, 4))
	local w1 = t:add_le(f.w1, tvb(8, 8))
	w1:add(f.opcode, tvb(8, 1))
	t:add(f.op, tvb(8, 1), opname)

	local what = opname
	local data_len, data2_off = 0, nil
	local show_len, show_size = false, false
	local hello, irq, claim_ack, shm = false, false, false, false
	local answered = false -- a request that gets an answer

	-- Sizes: as check_single / check_pair / check_large of wire.c.
	local function single(need_data)
		show_size = true
		if size < 1 or size > MAX_SINGLE then
			bad(string.format("size %d outside 1..%d", size, MAX_SINGLE))
			return
		end
		if need_data then
			data_len = size
		end
	end
	local function pair(with_data)
		show_size = true
		if size < 1 or size > MAX_PAIR then
			bad(string.format("pair element size %d outside 1..%d", size, MAX_PAIR))
			return
		end
		if with_data then
			data_len = size
			data2_off = (4 + math.floor(size / 8)) * 8
		end
	end
	local function large(need_data)
		show_len = true
		if mask < 1 or mask > LARGE_PIECE then
			bad(string.format("length %d outside 1..%d", mask, LARGE_PIECE))
			return
		end
		if DATA_OFF + mask <= flen then
			data_len = mask
		elseif need_data then
			bad(string.format("data of %d bytes beyond the %d-byte frame", mask, flen))
		end
	end

	if op == OP.PING then
		hello = u32(tvb, 16) == MAGIC_LO and u32(tvb, 20) == MAGIC_HI
		what = hello and "hello" or "ping"
		answered = is_request
	elseif op == OP.RESET then
		what = "reset"
		if not from_vm then
			bad("RESET from a client")
		end
	elseif op == OP.RGN_CLAIM then
		if from_vm then
			if not origin then
				bad("claim answer with origin 0")
			end
			claim_ack = true
			what = "claim ack"
		else
			what = "claim"
			answered = true
		end
	elseif op == OP.IRQ_UPDATE then
		if from_vm then
			bad("IRQ_UPDATE from the VM")
		end
		irq = true
		what = "IRQ update"
	elseif op == OP.READ then
		if from_vm then
			single(origin and not is_err)
			what = origin and "DMA read answer" or "MMIO read"
		else
			single(not origin and not is_err)
			what = origin and "DMA read" or "MMIO read answer"
		end
		answered = is_request
	elseif op == OP.WRITE then
		if origin then
			bad("WRITE with origin 1")
		else
			single(from_vm)
			what = from_vm and "MMIO posted write" or "MMIO posted write returned"
		end
	elseif op == OP.WRITEA then
		if from_vm then
			single(not origin)
			what = origin and "DMA write answer" or "MMIO acked write"
		else
			single(origin)
			what = origin and "DMA write" or "MMIO acked write answer"
		end
		answered = is_request
	elseif op == OP.READP then
		if origin then
			bad("READP with origin 1")
		elseif from_vm then
			pair(false)
			what = "MMIO pair read"
			answered = true
		else
			if not is_err then
				pair(true)
			end
			what = "MMIO pair read answer"
		end
	elseif op == OP.WRITEP or op == OP.WRITEAP then
		local acked = op == OP.WRITEAP
		if origin then
			bad(opname .. " with origin 1")
		elseif from_vm then
			pair(true)
			what = acked and "MMIO acked pair write" or "MMIO posted pair write"
			answered = acked
		else
			what = acked and "MMIO acked pair write answer" or "MMIO posted pair write returned"
		end
	elseif op == OP.LREAD then
		if not origin then
			bad("LREAD with origin 0")
		elseif from_vm then
			large(not is_err)
			what = "large DMA read answer"
			if is_err then
				data_len = 0
			end
		else
			large(false)
			data_len = 0 -- a request carries no data
			what = "large DMA read"
			answered = true
		end
	elseif op == OP.LWRITE then
		if not origin then
			bad("LWRITE with origin 0")
		elseif from_vm then
			large(false)
			data_len = 0
			what = "large DMA write answer"
		else
			large(true)
			what = "large DMA write"
			answered = true
		end
	elseif op == OP.SHM_MAP then
		what = "SHM map"
		if not from_vm then
			bad("SHM_MAP from a client")
		elseif origin or is_err or extra ~= 0 then
			bad("SHM_MAP must have origin 0, no error bit and E = 0")
		end
		shm = true
	else
		bad(string.format("unknown opcode 0x%02x", op))
	end

	if show_size then
		w1:add(f.size, tvb(10, 1))
	end
	w1:add(f.sid, tvb(11, 1))
	local fl = w1:add(f.flags, tvb(11, 1))
	fl:add(f.flag_ifetch, tvb(11, 1))
	fl:add(f.flag_priv, tvb(11, 1))
	fl:add(f.flag_secure, tvb(11, 1))
	if show_len then
		w1:add_le(f.len, tvb(12, 4))
	else
		w1:add_le(f.mask, tvb(12, 4))
	end
	t:add_le(f.addr, tvb(16, 8))

	if hello then
		local k = t:add_le(f.hello_kind, tvb(24, 8))
		local kind = u64n(tvb, 24)
		k:append_text(kind == 0 and " (offer)" or kind == 1 and " (answer)" or " (?)")
		local c = t:add_le(f.hello_caps, tvb(32, 8))
		c:add(f.cap_large, tvb(32, 1))
		c:add(f.cap_claim, tvb(32, 1))
		c:add(f.cap_shm, tvb(32, 1))
		t:add_le(f.hello_version, tvb(40, 8))
		what = kind == 1 and "hello answer" or "hello offer"
		if from_vm and kind == 0 then
			what = "hello offer echoed (base VM)"
		end
	end
	if irq then
		t:add_le(f.irq_iid, tvb(16, 8))
		t:add_le(f.irq_level, tvb(24, 8))
	end
	if claim_ack and is_err then
		local e = t:add_le(f.claim_errno, tvb(24, 8))
		local n = u64n(tvb, 24)
		if n and errno_names[n] then
			e:append_text(" (" .. errno_names[n] .. ")")
		end
	end
	if shm then
		t:add_le(f.shm_gpa, tvb(16, 8))
		t:add_le(f.shm_size, tvb(24, 8))
		t:add_le(f.shm_offset, tvb(32, 8))
		t:add_le(f.shm_index, tvb(40, 8))
		t:add_le(f.shm_gen, tvb(48, 8))
		t:add_le(f.shm_count, tvb(56, 8))
		-- As coreio__wire_shm_map_decode(): a map the client will not use.
		local count, index, rsize = u64n(tvb, 56), u64n(tvb, 40), u64n(tvb, 24)
		if count == nil or count > SHM_MAX_REGIONS then
			t:add_proto_expert_info(ef_warn, "SHM_MAP: more than 16 regions")
		elseif count > 0 and (index == nil or index >= count or rsize == 0) then
			t:add_proto_expert_info(ef_warn, "SHM_MAP: index beyond count or empty region")
		end
	end

	if data_len > 0 and DATA_OFF + data_len <= have then
		t:add(f.data, tvb(DATA_OFF, data_len))
		if data2_off and data2_off + data_len <= have then
			t:add(f.data2, tvb(data2_off, data_len))
		end
	end

	if is_err and not claim_ack then
		t:add_proto_expert_info(ef_error_bit)
	end
	for _, msg in ipairs(problems) do
		t:add_proto_expert_info(ef_malformed, msg)
	end
	if have > flen then
		t:add_proto_expert_info(ef_malformed, string.format(
			"%d bytes after the %d-byte frame", have - flen, flen))
	end

	-- Request / answer matching.
	local key = table.concat({ conv, origin and 1 or 0, iface, tag, op }, "/")
	local lk = link_key(pinfo, idx)
	if not pinfo.visited then
		if is_request and answered then
			pending[key] = { frame = pinfo.number, lk = lk, time = pinfo.rel_ts }
		elseif not is_request then
			local req = pending[key]
			if req then
				pending[key] = nil
				links[lk] = { req = req.frame, dt = pinfo.rel_ts - req.time }
				local rl = links[req.lk] or {}
				rl.ans = pinfo.number
				links[req.lk] = rl
			end
		end
	end
	local l = links[lk]
	if l then
		if l.ans then
			t:add(f.response_in, l.ans):set_generated()
		end
		if l.req then
			t:add(f.response_to, l.req):set_generated()
			local ns = math.floor(l.dt * 1e9 + 0.5)
			local ti = t:add(f.time, NSTime.new(math.floor(ns / 1e9), ns % 1000000000))
			ti:set_generated()
		end
	end

	t:add(f.role, is_request and "request" or "answer"):set_generated()
	t:add(f.what, what):set_generated()
	t:append_text(string.format(", %s, %s", what, from_vm and "VM -> client" or "client -> VM"))

	local s = string.format("%s %s %s tag %d if %d", from_vm and "VM->C" or "C->VM", opname,
		is_request and "req" or "ans", tag, iface)
	if shm then
		s = s .. string.format(" gen %s region %s/%s base %s size %s", tostring(u64n(tvb, 48)),
			tostring(u64n(tvb, 40)), tostring(u64n(tvb, 56)), hex64(tvb, 16), hex64(tvb, 24))
	elseif op ~= OP.PING and op ~= OP.RESET and op ~= OP.RGN_CLAIM and not irq then
		s = s .. " addr " .. hex64(tvb, 16)
	end
	if claim_ack and is_err then
		local n = u64n(tvb, 24)
		s = s .. " refused " .. (n and errno_names[n] or tostring(n))
	end
	if show_len then
		s = s .. " len " .. mask
	elseif show_size then
		s = s .. " size " .. size
	end
	if irq then
		s = s .. string.format(" iid %s level %s", tostring(u64n(tvb, 16)), tostring(u64n(tvb, 24)))
	end
	if hello then
		s = s .. string.format(" %s caps 0x%x", what, u32(tvb, 32))
	end
	if is_err then
		s = s .. " ERROR"
	end
	if #problems > 0 then
		s = s .. " [MALFORMED]"
	end
	return s
end

local function tcp_from_vm(pinfo)
	local sp, dp = pinfo.src_port, pinfo.dst_port
	local s_in, d_in = in_ports(sp), in_ports(dp)
	if s_in ~= d_in then
		return s_in
	end
	local m = pinfo.match_uint
	if m and m ~= 0 and sp ~= dp then
		if m == sp then
			return true
		elseif m == dp then
			return false
		end
	end
	-- Neither side is known: the server usually has the lower port.
	return sp < dp
end

local function set_info(pinfo, idx, s)
	if idx == 1 then
		pinfo.cols.info:set(s)
	else
		pinfo.cols.info:append(" | " .. s)
	end
end

-- Per-packet count of CoreIO frames, so that several TCP reassemblies in
-- one packet append to the Info column.
local info_pkt, info_count = -1, 0

function coreio.dissector(tvb, pinfo, tree)
	local len = tvb:len()
	local from_vm = tcp_from_vm(pinfo)
	local st = tcp_stream_f()
	local conv = "tcp:" .. (st and tostring(st.value) or "?")
	local off = 0

	pinfo.cols.protocol = "CoreIO"
	if info_pkt ~= pinfo.number then
		info_pkt, info_count = pinfo.number, 0
	end
	while off < len do
		local rest = len - off
		if rest < 2 then
			pinfo.desegment_offset = off
			pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
			return len
		end
		local flen = (tvb(off + 1, 1):uint() + 1) * UNIT
		if rest < flen then
			pinfo.desegment_offset = off
			pinfo.desegment_len = flen - rest
			return len
		end
		info_count = info_count + 1
		local s = dissect_frame(tvb(off, flen):tvb(), pinfo, tree, from_vm, conv, info_count)
		set_info(pinfo, info_count, s)
		off = off + flen
	end
	return off
end

DissectorTable.get("tcp.port"):add_for_decode_as(coreio)

---------------------------------------------------------------------------
-- coreiorec: one record of a coreio-vm recording (pcapng, LINKTYPE_USER0)
---------------------------------------------------------------------------

local rec = Proto("coreiorec", "CoreIO recording")

local kind_names = { [0] = "client -> VM frame", [1] = "VM -> client frame", [2] = "VM event" }
local event_names = {
	[1] = "connect",
	[2] = "close",
	[3] = "claim",
	[4] = "release",
	[5] = "bus-error",
	[6] = "iommu-fault",
	[7] = "reset",
	[8] = "inject",
	[9] = "dma-refused",
	[10] = "note",
}

local rf = {
	magic = ProtoField.uint8("coreiorec.magic", "Magic", base.HEX),
	version = ProtoField.uint8("coreiorec.version", "Version", base.DEC),
	kind = ProtoField.uint8("coreiorec.kind", "Kind", base.DEC, kind_names),
	flags = ProtoField.uint8("coreiorec.flags", "Flags", base.HEX),
	flag_fd = ProtoField.bool("coreiorec.flags.fd", "File descriptor attached", 8, nil, 0x01),
	conn = ProtoField.uint32("coreiorec.conn", "Connection", base.DEC),
	seq = ProtoField.uint64("coreiorec.seq", "Sequence number", base.DEC),
	ev_type = ProtoField.uint16("coreiorec.event.type", "Event type", base.DEC, event_names),
	ev_reserved = ProtoField.uint16("coreiorec.event.reserved", "Reserved", base.HEX),
	ev_text_len = ProtoField.uint32("coreiorec.event.text_len", "Text length", base.DEC),
	ev_text = ProtoField.string("coreiorec.event.text", "Text", base.UNICODE),
	ev_name = ProtoField.string("coreiorec.event.name", "Name", base.UNICODE),
	ev_param = ProtoField.string("coreiorec.event.param", "Parameter", base.UNICODE),
}
local rec_field_list = {}
for _, v in pairs(rf) do
	rec_field_list[#rec_field_list + 1] = v
end
rec.fields = rec_field_list

local ef_rec_bad = ProtoExpert.new("coreiorec.malformed", "Malformed coreio-vm record",
	expert.group.MALFORMED, expert.severity.ERROR)
local ef_rec_warn = ProtoExpert.new("coreiorec.suspicious", "Suspicious coreio-vm record",
	expert.group.SEQUENCE, expert.severity.WARN)
local ef_rec_fault = ProtoExpert.new("coreiorec.fault", "VM event: a fault",
	expert.group.RESPONSE_CODE, expert.severity.NOTE)
rec.experts = { ef_rec_bad, ef_rec_warn, ef_rec_fault }

local last_seq = nil -- first pass only: {hi, lo} of the previous record

local function dissect_event(tvb, pinfo, t)
	local blen = tvb:len()
	if blen < 8 then
		t:add_proto_expert_info(ef_rec_bad, "event body shorter than 8 bytes")
		return "event (truncated)"
	end
	local etype = tvb(0, 2):le_uint()
	local ename = event_names[etype] or string.format("event %d", etype)
	t:add_le(rf.ev_type, tvb(0, 2))
	local r = t:add_le(rf.ev_reserved, tvb(2, 2))
	if tvb(2, 2):le_uint() ~= 0 then
		r:add_proto_expert_info(ef_rec_warn, "reserved field not 0")
	end
	t:add_le(rf.ev_text_len, tvb(4, 4))
	local tlen = tvb(4, 4):le_uint()
	if tlen > blen - 8 then
		t:add_proto_expert_info(ef_rec_bad, string.format(
			"text length %d beyond the %d bytes of the record", tlen, blen - 8))
		tlen = blen - 8
	elseif tlen < blen - 8 then
		t:add_proto_expert_info(ef_rec_bad, string.format("%d bytes after the text",
			blen - 8 - tlen))
	end
	if event_names[etype] == nil then
		t:add_proto_expert_info(ef_rec_warn, "unknown event type")
	end
	if etype == 5 or etype == 6 or etype == 9 then
		t:add_proto_expert_info(ef_rec_fault, "VM event: " .. ename)
	end
	local text = ""
	if tlen > 0 then
		local tr = tvb(8, tlen)
		text = tr:string(ENC_UTF_8)
		t:add(rf.ev_text, tr, text)
		local name = string.match(text, "^(%S+)")
		if name then
			t:add(rf.ev_name, tr, name):set_generated()
		end
		if etype ~= 10 then
			-- "name key=value key=value ...": one item per key=value.
			for kv in string.gmatch(text, "%S+=%S*") do
				t:add(rf.ev_param, tr, kv):set_generated()
			end
		end
	end
	t:append_text(", " .. ename)
	return text
end

function rec.dissector(tvb, pinfo, tree)
	local len = tvb:len()
	pinfo.cols.protocol = "CoreIO-rec"
	local kind = len >= 3 and tvb(2, 1):uint() or -1
	local t = tree:add(rec, tvb(0, (len < 16 or kind == 2) and len or 16))
	if len < 16 then
		t:add_proto_expert_info(ef_rec_bad, "record shorter than its 16-byte header")
		pinfo.cols.info:set("truncated record")
		return len
	end
	local m = t:add(rf.magic, tvb(0, 1))
	if tvb(0, 1):uint() ~= 0x43 then
		m:add_proto_expert_info(ef_rec_bad, "bad magic (not 0x43 'C')")
	end
	local v = t:add(rf.version, tvb(1, 1))
	local version = tvb(1, 1):uint()
	t:add(rf.kind, tvb(2, 1))
	local fl = t:add(rf.flags, tvb(3, 1))
	fl:add(rf.flag_fd, tvb(3, 1))
	local conn = tvb(4, 4):le_uint()
	t:add_le(rf.conn, tvb(4, 4))
	t:add_le(rf.seq, tvb(8, 8))
	local seq_hi, seq_lo = tvb(12, 4):le_uint(), tvb(8, 4):le_uint()
	t:append_text(string.format(", %s, conn %d, seq %s", kind_names[kind] or "?", conn,
		tostring(tvb(8, 8):le_uint64())))
	if not pinfo.visited then
		if last_seq and (seq_hi < last_seq[1] or (seq_hi == last_seq[1] and seq_lo <= last_seq[2])) then
			t:add_proto_expert_info(ef_rec_warn, "sequence number not above the previous record's")
		end
		last_seq = { seq_hi, seq_lo }
	end
	if version ~= 1 then
		v:add_proto_expert_info(ef_rec_bad, "unknown record version (this dissector reads 1)")
		pinfo.cols.info:set(string.format("record version %d", version))
		return len
	end

	local body = len > 16 and tvb(16):tvb() or nil
	if kind == 0 or kind == 1 then
		local from_vm = kind == 1
		pinfo.cols.src = from_vm and "coreio-vm" or string.format("conn %d", conn)
		pinfo.cols.dst = from_vm and string.format("conn %d", conn) or "coreio-vm"
		if not body or body:len() < UNIT then
			t:add_proto_expert_info(ef_rec_bad, "frame record shorter than one 64-byte unit")
			pinfo.cols.info:set("truncated frame")
			return len
		end
		local s = dissect_frame(body, pinfo, tree, from_vm, "rec:" .. conn, 1)
		if tvb(3, 1):uint() % 2 == 1 then
			s = s .. " +fd"
		end
		pinfo.cols.info:set(s)
	elseif kind == 2 then
		pinfo.cols.src = "coreio-vm"
		pinfo.cols.dst = conn ~= 0 and string.format("conn %d", conn) or ""
		local et = t:add(tvb(16), "Event")
		if not body then
			et:add_proto_expert_info(ef_rec_bad, "event record without a body")
			pinfo.cols.info:set("truncated event")
			return len
		end
		local text = dissect_event(body, pinfo, et)
		pinfo.cols.info:set("EVENT " .. text)
	else
		t:add_proto_expert_info(ef_rec_bad, string.format("unknown record kind %d", kind))
		pinfo.cols.info:set(string.format("record kind %d", kind))
	end
	return len
end

function rec.init()
	last_seq = nil
end

function coreio.init()
	pending = {}
	links = {}
end

local encaps = wtap_encaps or wtap
DissectorTable.get("wtap_encap"):add(encaps.USER0, rec)
