// SPDX-License-Identifier: Apache-2.0
/*
 * netpolc cost calibration: the price of one BPF map lookup on this kernel.
 *
 * One TC program, run with BPF_PROG_TEST_RUN (verifier/kernel/calibrate_bpf.py), performs
 * `lookups` lookups (0..MAX_LOOKUPS, from `calib_config`) in one of two maps that have the
 * shapes of the maps a Cilium packet meets:
 *   which = 0: `calib_hash`, a HASH keyed like `struct lb4_key` (12 bytes; the Service map,
 *              compiler/targets/ebpf/services.py), filled with `entries` keys;
 *   which = 1: `calib_lpm`, an LPM_TRIE keyed like `struct ipcache_key` (24 bytes; the ipcache,
 *              shared/reference/cilium.md §2), filled with `entries` /32 addresses.
 * Lookups run through bpf_loop (Linux 5.17+). Every lookup hits an existing key, spread over the map (i * 7919 mod entries). The cost of one
 * lookup is the slope between lookups = 0 and lookups = MAX_LOOKUPS on the same packet, so the
 * harness (program entry, test-run bookkeeping) cancels out.
 */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/types.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define MAX_LOOKUPS 256
#define HASH_SIZE 65536
#define LPM_SIZE 512000 /* cilium_ipcache_v2 MaxEntries (cilium.md §2) */
#define BASE_ADDRESS 0x0a000000 /* 10.0.0.0: entry j is 10.0.0.0 + j */

struct lb4_key {
	__be32 address;
	__be16 dport;
	__u16 backend_slot;
	__u8 proto;
	__u8 scope;
	__u8 pad[2];
};

struct ipcache_key {
	__u32 prefixlen;
	__u16 cluster_id;
	__u8 pad1;
	__u8 family;
	__u8 addr[16];
};

struct calib_config {
	__u32 lookups;
	__u32 which;
	__u32 entries;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HASH_SIZE);
	__type(key, struct lb4_key);
	__type(value, __u64);
} calib_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LPM_SIZE);
	__type(key, struct ipcache_key);
	__type(value, __u64);
} calib_lpm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct calib_config);
} calib_config SEC(".maps");

struct loop_state {
	__u32 entries;
	__u32 hits;
};

static long hash_lookup(__u32 i, void *data)
{
	struct loop_state *state = data;
	struct lb4_key key = {};
	if (state->entries == 0)
		return 1;
	key.address = bpf_htonl(BASE_ADDRESS + (i * 7919) % state->entries);
	key.dport = bpf_htons(80);
	key.proto = 6;
	if (bpf_map_lookup_elem(&calib_hash, &key))
		state->hits++;
	return 0;
}

static long lpm_lookup(__u32 i, void *data)
{
	struct loop_state *state = data;
	struct ipcache_key key = {};
	if (state->entries == 0)
		return 1;
	key.prefixlen = 32 + 32; /* cluster_id, pad1, family, then the IPv4 address */
	key.family = 1;
	__be32 raw = bpf_htonl(BASE_ADDRESS + (i * 7919) % state->entries);
	__builtin_memcpy(key.addr, &raw, 4);
	if (bpf_map_lookup_elem(&calib_lpm, &key))
		state->hits++;
	return 0;
}

/* bpf_loop (Linux 5.17): the verifier checks the callback once instead of unrolling the loop. */
SEC("tc")
int calibrate(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct calib_config *config = bpf_map_lookup_elem(&calib_config, &zero);
	if (!config || config->entries == 0 || config->lookups > MAX_LOOKUPS)
		return TC_ACT_SHOT;
	struct loop_state state = {.entries = config->entries, .hits = 0};
	__u32 lookups = config->lookups;
	if (config->which == 0)
		bpf_loop(lookups, hash_lookup, &state, 0);
	else
		bpf_loop(lookups, lpm_lookup, &state, 0);
	/* every lookup must hit: the caller checks the return value */
	return state.hits == lookups ? TC_ACT_OK : TC_ACT_SHOT;
}
