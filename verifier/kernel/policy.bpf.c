// SPDX-License-Identifier: Apache-2.0
/*
 * netpolc kernel testbed: Cilium 1.18's policy decision as a TC (cls_bpf, direct-action) program.
 *
 * What it does (DESIGN.md §5, the "eBPF maps into a TC program" half of the kernel testbed):
 *   - reads the maps netpolc's eBPF target writes, in Cilium 1.18 byte layouts
 *     (shared/reference/cilium.md §1.2 policy_key, §1.4 policy_entry, §2 ipcache key/value);
 *   - decides each packet with Cilium's lookup order (§1.7 __policy_can_access): lookup 1 with
 *     the remote identity, lookup 2 with identity 0 (L4-only), deny / proxy-port-priority /
 *     prefix-length precedence;
 *   - returns TC_ACT_OK or TC_ACT_SHOT and counts why in `netpolc_counters`.
 *
 * Attachment (verifier/kernel/load_ebpf.py): on every endpoint's node-side veth,
 *   tc ingress -> from_endpoint(): packets the endpoint sends   -> its EGRESS policy;
 *   tc egress  -> to_endpoint():   packets sent to the endpoint -> its INGRESS policy.
 * (Both in section "tc": libbpf 1.1, Debian's, knows no "tc/<name>" sections.)
 * Endpoint -> endpoint traffic therefore meets the source's egress policy and then the
 * destination's ingress policy, exactly DESIGN.md §2 / docs/SEMANTICS.md §2.
 *
 * Policy maps: ONE program, one map-in-map. `netpolc_policy_maps` (HASH_OF_MAPS) is keyed by
 * the endpoint ID and holds each endpoint's own LPM map `cilium_policy_v2_<EPID>`; the endpoint
 * is found by address in `netpolc_endpoints` (our own map, not a Cilium layout). Cilium instead
 * compiles one program per endpoint with its map name baked in; the lookup inside the map is
 * the same. Every inner map must match the template exactly, max_entries included (LPM tries
 * refuse BPF_F_INNER_MAP), so each policy map holds POLICY_MAP_SIZE = 16384 entries, Cilium's
 * default `bpf-policy-map-max`; the loader refuses bigger maps as the kernel would (E2BIG).
 *
 * Not policy-checked: non-IP frames (ARP) and IPv6 link-scope traffic (ND, MLD, fe80::/10 source,
 * ff02::/16 destination), which never leaves the veth's link. IP traffic whose endpoint address is
 * not in `netpolc_endpoints` is dropped (fail closed; counted), so a missing entry cannot pass.
 *
 * Conntrack (simplified versus Cilium's bpf/lib/conntrack.h): an LRU hash of
 * {endpoint, direction, 5-tuple}. A packet the policy allows creates the entry for its own
 * direction; a later packet with the same tuple ("established") or the reversed tuple of the
 * other direction ("reply") passes without a policy lookup. Not modelled: TCP state (SYN/FIN/RST,
 * closing), lifetimes and GC (entries leave only by LRU eviction), related ICMP errors, NAT,
 * per-entry proxy_redirect replay, CT-based policy re-evaluation after a policy change.
 *
 * Proxy redirects: an allow entry with proxy_port != 0 would make Cilium redirect to Envoy
 * (§1.7, MARK_MAGIC_TO_PROXY). The testbed has no Envoy: the packet is passed as allowed and
 * counted under NETPOLC_REDIRECTED, which is the L3/L4 meaning of Hubble's REDIRECTED.
 *
 * Not modelled: mutual auth (an entry with an auth type drops with DROP_POLICY_AUTH_REQUIRED,
 * as Cilium does when cilium_auth_map has no entry), ALLOW_ICMP_FRAG_NEEDED (off), audit mode,
 * policy accounting (cilium_policystats), tunnel/encap checks.
 */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/types.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Sizes. POLICY_MAP_SIZE: `bpf-policy-map-max` default (cilium.md §1.1); IPCACHE_MAP_SIZE:
 * cilium_ipcache_v2 MaxEntries (§2). Cilium's endpoint IDs are 16-bit (cilium_call_policy has
 * 65535 slots, §1.1). */
#define POLICY_MAP_SIZE 16384
#define IPCACHE_MAP_SIZE 512000
#define ENDPOINTS_MAP_SIZE 65536
#define CT_MAP_SIZE 65536

#define ETH_HLEN_ 14
#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD

#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ICMPV6 58
#define PROTO_SCTP 132
/* IPv6 extension headers skipped on the way to the upper-layer header. */
#define PROTO_HOPOPTS 0
#define PROTO_ROUTING 43
#define PROTO_FRAGMENT 44
#define PROTO_AUTH 51
#define PROTO_DSTOPTS 60
#define MAX_IPV6_EXT_HEADERS 6

/* Policy key prefix: POLICY_FULL_PREFIX = 8 * (12 - 4) (cilium.md §1.2). */
#define POLICY_FULL_PREFIX 64
/* policy_entry.flags: bit0 deny, bits 3-7 lpm_prefix_length (cilium.md §1.4). */
#define POLICY_FLAG_DENY 0x1
#define POLICY_FLAG_LPM_SHIFT 3
/* policy_entry.auth: bits 0-6 auth type, bit 7 explicit (cilium.md §1.4). */
#define AUTH_TYPE_MASK 0x7f
#define AUTH_EXPLICIT 0x80
/* ipcache: static prefix 32 bits + address bits; families (cilium.md §2). */
#define IPCACHE_STATIC_PREFIX 32
#define ENDPOINT_KEY_IPV4 1
#define ENDPOINT_KEY_IPV6 2
/* Identity used when an address is not in the ipcache: WORLD_ID (cilium.md §2). */
#define WORLD_ID 2

/* Counter slots (`netpolc_counters`, index = reason). Codes >= 128 are Cilium's drop reasons,
 * the positive form of DROP_* (cilium.md §6.5); codes < 128 are this program's own. */
#define NETPOLC_ALLOWED 1       /* new flow allowed by policy, no redirect */
#define NETPOLC_REDIRECTED 2    /* new flow allowed with proxy_port != 0 (passed: no Envoy here) */
#define NETPOLC_CT_ESTABLISHED 3 /* same tuple, same direction as an allowed flow */
#define NETPOLC_CT_REPLY 4      /* reversed tuple of an allowed flow */
#define NETPOLC_PASS_NON_IP 5   /* ARP and other non-IP frames */
#define NETPOLC_PASS_LINK_LOCAL 6 /* IPv6 link-scope control traffic (ND, MLD, fe80::/10, ff02::/16) */
#define NETPOLC_DROP_UNKNOWN_ENDPOINT 7 /* the veth's address is in no endpoint entry */
#define NETPOLC_DROP_MALFORMED 8 /* truncated headers */
#define DROP_POLICY 133
#define DROP_FRAG_NOSUPPORT 157
#define DROP_POLICY_DENY 181
#define DROP_POLICY_AUTH_REQUIRED 189
#define DROP_EP_NOT_READY 203 /* endpoint known but no policy map installed */
#define COUNTER_SLOTS 256

/* config[0] bits. */
#define CONFIG_NO_CT_CREATE 0x1 /* benchmarks: never create CT entries, so every run takes the policy path */

/* Direction as in Cilium's key: egress bit = 1 for egress, 0 for ingress (cilium.md §1.2). */
#define DIR_INGRESS 0
#define DIR_EGRESS 1

/* cilium.md §1.2: 12 bytes. `egress` is the byte holding `egress:1, pad:7`; bit 0 is the
 * direction on little-endian bitfield layout, so the byte is 0 or 1. */
struct policy_key {
	__u32 prefixlen;
	__u32 sec_label;
	__u8 egress;
	__u8 protocol;
	__be16 dport;
};

/* cilium.md §1.4 [1.18]: 8 bytes. */
struct policy_entry {
	__be16 proxy_port;
	__u8 flags;
	__u8 auth;
	__u8 proxy_port_priority;
	__u8 pad1;
	__u16 pad2;
};

/* cilium.md §2: 24-byte key, address in network order. */
struct ipcache_key {
	__u32 prefixlen;
	__u16 cluster_id;
	__u8 pad1;
	__u8 family;
	__u8 addr[16];
};

/* cilium.md §2 [1.18]: 24-byte value. */
struct remote_endpoint_info {
	__u32 sec_identity;
	__u8 tunnel_endpoint[16];
	__u16 pad;
	__u8 key;
	__u8 flags;
};

/* netpolc's own endpoint table: address -> endpoint ID and identity. */
struct endpoint_key {
	__u8 addr[16];
	__u8 family;
	__u8 pad[3];
};

#define ENDPOINT_F_INGRESS_ENFORCED 0x1
#define ENDPOINT_F_EGRESS_ENFORCED 0x2

struct endpoint_value {
	__u32 epid;
	__u32 identity;
	__u32 flags; /* informational: Cilium always looks the map up, unenforced = an allow-all entry (§1.8) */
};

struct ct_key {
	__u32 epid;
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 direction;
	__u8 family;
	__u8 pad;
};

struct ct_value {
	__u64 packets;
	__u16 proxy_port; /* host order; the redirect the flow got when it was created */
	__u16 pad1;
	__u32 pad2;
};

struct policy_map_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, POLICY_MAP_SIZE);
	/* Sizes, not BTF types: clang emits only forward declarations for types reached
	 * through the map-in-map template, which libbpf cannot size. */
	__uint(key_size, sizeof(struct policy_key));
	__uint(value_size, sizeof(struct policy_entry));
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, ENDPOINTS_MAP_SIZE);
	__type(key, __u32);
	__array(values, struct policy_map_inner);
} netpolc_policy_maps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, IPCACHE_MAP_SIZE);
	__type(key, struct ipcache_key);
	__type(value, struct remote_endpoint_info);
} cilium_ipcache_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ENDPOINTS_MAP_SIZE);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_value);
} netpolc_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CT_MAP_SIZE);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
} netpolc_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} netpolc_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} netpolc_config SEC(".maps");

/* What the parser extracts from one packet. */
struct packet {
	__u8 family;   /* ENDPOINT_KEY_IPV4 / _IPV6 */
	__u8 protocol; /* upper-layer protocol after IPv6 extension headers */
	__u8 fragment; /* non-first fragment: no L4 header, ports are 0 */
	__u8 link_local; /* IPv6 link-scope traffic: passed without policy */
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;  /* TCP/UDP/SCTP source port; ICMP echo identifier */
	__be16 dport;  /* TCP/UDP/SCTP destination port; ICMP echo identifier (CT only) */
	__be16 policy_port; /* what goes into policy_key.dport: dport, or the ICMP type (§1.6) */
};

static __always_inline void count(__u32 reason)
{
	__u64 *slot = bpf_map_lookup_elem(&netpolc_counters, &reason);

	if (slot)
		__sync_fetch_and_add(slot, 1);
}

static __always_inline __u32 config_flags(void)
{
	__u32 zero = 0;
	__u32 *flags = bpf_map_lookup_elem(&netpolc_config, &zero);

	return flags ? *flags : 0;
}

/* ICMP type into the be16 port field: bpf_u8_to_be16(type) (cilium.md §1.6). */
static __always_inline __be16 icmp_type_port(__u8 type)
{
	return bpf_htons((__u16)type);
}

/* Upper-layer fields at offset `off`. Returns 0, or a NETPOLC_DROP_* reason. */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, struct packet *pkt)
{
	__u8 icmp[8];

	if (pkt->fragment)
		return 0;
	switch (pkt->protocol) {
	case PROTO_TCP:
	case PROTO_UDP:
	case PROTO_SCTP:
		/* All three start with source port, destination port. */
		if (bpf_skb_load_bytes(skb, off, &pkt->sport, 4) < 0)
			return NETPOLC_DROP_MALFORMED;
		pkt->policy_port = pkt->dport;
		return 0;
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		if (bpf_skb_load_bytes(skb, off, icmp, 8) < 0)
			return NETPOLC_DROP_MALFORMED;
		pkt->policy_port = icmp_type_port(icmp[0]);
		/* Echo request/reply (8/0, 128/129): the identifier ties a reply to its request. */
		if ((pkt->protocol == PROTO_ICMP && (icmp[0] == 8 || icmp[0] == 0)) ||
		    (pkt->protocol == PROTO_ICMPV6 && (icmp[0] == 128 || icmp[0] == 129))) {
			__builtin_memcpy(&pkt->sport, &icmp[4], 2);
			pkt->dport = pkt->sport;
		}
		if (pkt->protocol == PROTO_ICMPV6 && icmp[0] >= 130 && icmp[0] <= 143)
			pkt->link_local = 1; /* MLD (130-132, 143), router/neighbour discovery (133-137) */
		return 0;
	default:
		return 0;
	}
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, struct packet *pkt)
{
	__u8 hdr[20];
	__u32 ihl;
	__u16 frag;

	if (bpf_skb_load_bytes(skb, ETH_HLEN_, hdr, sizeof(hdr)) < 0)
		return NETPOLC_DROP_MALFORMED;
	ihl = (hdr[0] & 0x0f) * 4;
	if ((hdr[0] >> 4) != 4 || ihl < 20)
		return NETPOLC_DROP_MALFORMED;
	pkt->family = ENDPOINT_KEY_IPV4;
	pkt->protocol = hdr[9];
	frag = ((__u16)(hdr[6] & 0x1f) << 8) | hdr[7];
	pkt->fragment = frag != 0;
	__builtin_memcpy(pkt->saddr, &hdr[12], 4);
	__builtin_memcpy(pkt->daddr, &hdr[16], 4);
	return parse_l4(skb, ETH_HLEN_ + ihl, pkt);
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, struct packet *pkt)
{
	__u8 hdr[40];
	__u8 ext[4];
	__u32 off = ETH_HLEN_ + 40;
	__u8 next;
	int i;

	if (bpf_skb_load_bytes(skb, ETH_HLEN_, hdr, sizeof(hdr)) < 0)
		return NETPOLC_DROP_MALFORMED;
	if ((hdr[0] >> 4) != 6)
		return NETPOLC_DROP_MALFORMED;
	pkt->family = ENDPOINT_KEY_IPV6;
	__builtin_memcpy(pkt->saddr, &hdr[8], 16);
	__builtin_memcpy(pkt->daddr, &hdr[24], 16);
	/* Link-scope traffic never leaves the veth's link: fe80::/10 source, or ff02::/16
	 * (link-local multicast) destination, which also covers MLD reports sent from ::. */
	if ((hdr[8] == 0xfe && (hdr[9] & 0xc0) == 0x80) || (hdr[24] == 0xff && (hdr[25] & 0x0f) == 0x02))
		pkt->link_local = 1;
	next = hdr[6];
#pragma unroll
	for (i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
		if (next != PROTO_HOPOPTS && next != PROTO_ROUTING && next != PROTO_FRAGMENT &&
		    next != PROTO_AUTH && next != PROTO_DSTOPTS)
			break;
		if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)) < 0)
			return NETPOLC_DROP_MALFORMED;
		if (next == PROTO_FRAGMENT) {
			/* Fragment offset: upper 13 bits of bytes 2-3. */
			if ((((__u16)ext[2] << 8) | ext[3]) & 0xfff8)
				pkt->fragment = 1;
			off += 8;
		} else if (next == PROTO_AUTH) {
			off += ((__u32)ext[1] + 2) * 4;
		} else {
			off += ((__u32)ext[1] + 1) * 8;
		}
		next = ext[0];
	}
	pkt->protocol = next;
	return parse_l4(skb, off, pkt);
}

/* Identity of a remote address: ipcache LPM with a full-length key, WORLD_ID on a miss (§2). */
static __always_inline __u32 remote_identity(const struct packet *pkt, const __u8 *addr)
{
	struct ipcache_key key = {};
	struct remote_endpoint_info *info;

	key.family = pkt->family;
	if (pkt->family == ENDPOINT_KEY_IPV4) {
		key.prefixlen = IPCACHE_STATIC_PREFIX + 32;
		__builtin_memcpy(key.addr, addr, 4);
	} else {
		key.prefixlen = IPCACHE_STATIC_PREFIX + 128;
		__builtin_memcpy(key.addr, addr, 16);
	}
	info = bpf_map_lookup_elem(&cilium_ipcache_v2, &key);
	return info ? info->sec_identity : WORLD_ID;
}

static __always_inline __u8 entry_prefix(const struct policy_entry *e)
{
	return e->flags >> POLICY_FLAG_LPM_SHIFT;
}

/* Cilium 1.18's __policy_can_access + __policy_check (cilium.md §1.7). Returns 0 when allowed
 * (and the proxy port, host order, in *proxy_port), or a positive DROP_* reason. */
static __always_inline int policy_can_access(void *map, __u32 remote_id, __u8 egress, const struct packet *pkt,
					     __u16 *proxy_port)
{
	struct policy_key key = {
		.prefixlen = POLICY_FULL_PREFIX,
		.sec_label = remote_id,
		.egress = egress,
		.protocol = pkt->protocol,
		.dport = pkt->fragment ? 0 : pkt->policy_port,
	};
	struct policy_entry *l3, *l4, *chosen, *other;
	__u8 auth;

	/* Lookup 1: the remote identity. A deny ends the search. */
	l3 = bpf_map_lookup_elem(map, &key);
	if (l3 && (l3->flags & POLICY_FLAG_DENY))
		return DROP_POLICY_DENY;
	/* Lookup 2: identity 0, L4-only. */
	key.sec_label = 0;
	l4 = bpf_map_lookup_elem(map, &key);
	if (l4 && ((l4->flags & POLICY_FLAG_DENY) || !l3 || l4->proxy_port_priority > l3->proxy_port_priority ||
		   (l4->proxy_port_priority == l3->proxy_port_priority && entry_prefix(l4) > entry_prefix(l3)))) {
		chosen = l4;
		other = l3;
	} else if (l3) {
		chosen = l3;
		other = l4;
	} else {
		return pkt->fragment ? DROP_FRAG_NOSUPPORT : DROP_POLICY;
	}
	if (chosen->flags & POLICY_FLAG_DENY)
		return DROP_POLICY_DENY;
	auth = chosen->auth & AUTH_TYPE_MASK;
	if (other && !(chosen->auth & AUTH_EXPLICIT) && (other->auth & AUTH_TYPE_MASK) > auth)
		auth = other->auth & AUTH_TYPE_MASK;
	if (auth)
		return DROP_POLICY_AUTH_REQUIRED; /* no cilium_auth_map in the testbed */
	*proxy_port = bpf_ntohs(chosen->proxy_port);
	return 0;
}

static __always_inline void ct_tuple(struct ct_key *key, __u32 epid, __u8 direction, const struct packet *pkt,
				     int reverse)
{
	key->epid = epid;
	key->direction = direction;
	key->protocol = pkt->protocol;
	key->family = pkt->family;
	if (reverse) {
		__builtin_memcpy(key->saddr, pkt->daddr, 16);
		__builtin_memcpy(key->daddr, pkt->saddr, 16);
		key->sport = pkt->dport;
		key->dport = pkt->sport;
	} else {
		__builtin_memcpy(key->saddr, pkt->saddr, 16);
		__builtin_memcpy(key->daddr, pkt->daddr, 16);
		key->sport = pkt->sport;
		key->dport = pkt->dport;
	}
}

/* The policy of the endpoint on this veth, in one direction: egress for packets it sends,
 * ingress for packets it receives. */
static __always_inline int handle(struct __sk_buff *skb, __u8 direction)
{
	struct packet pkt = {};
	struct endpoint_key ep_key = {};
	struct endpoint_value *ep;
	struct ct_key ct = {};
	struct ct_value ct_new = {};
	struct ct_value *hit;
	void *policy_map;
	__u16 eth_proto;
	__u16 proxy_port = 0;
	__u32 remote_id;
	int err;

	if (bpf_skb_load_bytes(skb, 12, &eth_proto, 2) < 0) {
		count(NETPOLC_DROP_MALFORMED);
		return TC_ACT_SHOT;
	}
	if (eth_proto == bpf_htons(ETH_P_IP_)) {
		err = parse_ipv4(skb, &pkt);
	} else if (eth_proto == bpf_htons(ETH_P_IPV6_)) {
		err = parse_ipv6(skb, &pkt);
	} else {
		count(NETPOLC_PASS_NON_IP);
		return TC_ACT_OK;
	}
	if (err) {
		count(err);
		return TC_ACT_SHOT;
	}
	if (pkt.link_local) {
		count(NETPOLC_PASS_LINK_LOCAL);
		return TC_ACT_OK;
	}

	/* The endpoint: the sender for egress, the receiver for ingress. */
	ep_key.family = pkt.family;
	__builtin_memcpy(ep_key.addr, direction == DIR_EGRESS ? pkt.saddr : pkt.daddr, 16);
	ep = bpf_map_lookup_elem(&netpolc_endpoints, &ep_key);
	if (!ep) {
		count(NETPOLC_DROP_UNKNOWN_ENDPOINT);
		return TC_ACT_SHOT;
	}

	/* Conntrack: an established flow of this direction, or the reply to one of the other. */
	ct_tuple(&ct, ep->epid, direction, &pkt, 0);
	hit = bpf_map_lookup_elem(&netpolc_ct, &ct);
	if (hit) {
		__sync_fetch_and_add(&hit->packets, 1);
		count(NETPOLC_CT_ESTABLISHED);
		return TC_ACT_OK;
	}
	ct_tuple(&ct, ep->epid, direction == DIR_EGRESS ? DIR_INGRESS : DIR_EGRESS, &pkt, 1);
	hit = bpf_map_lookup_elem(&netpolc_ct, &ct);
	if (hit) {
		__sync_fetch_and_add(&hit->packets, 1);
		count(NETPOLC_CT_REPLY);
		return TC_ACT_OK;
	}

	policy_map = bpf_map_lookup_elem(&netpolc_policy_maps, &ep->epid);
	if (!policy_map) {
		count(DROP_EP_NOT_READY);
		return TC_ACT_SHOT;
	}
	remote_id = remote_identity(&pkt, direction == DIR_EGRESS ? pkt.daddr : pkt.saddr);
	err = policy_can_access(policy_map, remote_id, direction, &pkt, &proxy_port);
	if (err) {
		count(err);
		return TC_ACT_SHOT;
	}
	if (!(config_flags() & CONFIG_NO_CT_CREATE)) {
		ct_tuple(&ct, ep->epid, direction, &pkt, 0);
		ct_new.packets = 1;
		ct_new.proxy_port = proxy_port;
		bpf_map_update_elem(&netpolc_ct, &ct, &ct_new, BPF_ANY);
	}
	count(proxy_port ? NETPOLC_REDIRECTED : NETPOLC_ALLOWED);
	return TC_ACT_OK;
}

SEC("tc")
int from_endpoint(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}

SEC("tc")
int to_endpoint(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}
