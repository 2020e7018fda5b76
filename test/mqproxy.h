/*
 * mqproxy: a fault-injecting TCP proxy that understands MQTT packet
 * boundaries, run in a thread of the test process on a free 127.0.0.1 port
 * in front of a real broker.
 *
 * Each accepted connection gets its own thread and its own connection to
 * the broker. Bytes are cut into MQTT packets (fixed header and remaining
 * length) in both directions; every packet is counted by type and
 * direction, then checked against the rules, first matching rule first.
 * A rule says what to do with the packet it matches:
 *
 *   MQP_DROP        swallow it (the connection goes on)
 *   MQP_CUT_BEFORE  close both sockets without forwarding it
 *   MQP_CUT_AFTER   forward it, then close both sockets
 *   MQP_DELAY       forward it after delay_ms (that connection stalls)
 *   MQP_DUP         forward it twice
 *   MQP_BLACKHOLE   swallow it and everything after it on this connection,
 *                   both ways, keeping the sockets open (a silent network)
 *   MQP_ADD_PROPS   CONNACK of MQTT 5 only: append the property bytes in
 *                   props[] (e.g. "\x2a\x00" Shared Subscription Available
 *                   0) and forward the rewritten packet
 *
 * A rule matches by packet type (0: any), direction, MQTT protocol level of
 * the connection's CONNECT (0: any; 5 for MQTT 5, 4 for 3.1.1), and topic:
 * a PUBLISH whose topic name matches the filter, a SUBSCRIBE / UNSUBSCRIBE
 * with a filter equal to it (NULL: any), and for PUBLISH by QoS (qos_mask).
 * nth: act on the nth match only
 * (1-based; 0: on every match), times: at most that many actions (0: no
 * bound). Rules can be added and cleared while traffic flows (any thread).
 *
 * Modes for the whole proxy: forwarding (default); blackhole (new and
 * existing connections are held open and nothing is forwarded or
 * answered); refuse (new connections are closed at once). The destination
 * port can be changed (the next connection goes there). The raw variant
 * (mqp_start_raw) is a plain byte pipe for TLS: no parsing, no rules, only
 * connection counts, modes and cuts.
 */
#ifndef CWM_TEST_MQPROXY_H
#define CWM_TEST_MQPROXY_H

#include <stddef.h>

enum mqp_type {
	MQP_CONNECT = 1, MQP_CONNACK, MQP_PUBLISH, MQP_PUBACK, MQP_PUBREC,
	MQP_PUBREL, MQP_PUBCOMP, MQP_SUBSCRIBE, MQP_SUBACK, MQP_UNSUBSCRIBE,
	MQP_UNSUBACK, MQP_PINGREQ, MQP_PINGRESP, MQP_DISCONNECT, MQP_AUTH
};

enum mqp_dir { MQP_C2S = 1, MQP_S2C = 2, MQP_BOTH = 3 };

enum mqp_action {
	MQP_DROP = 1, MQP_CUT_BEFORE, MQP_CUT_AFTER, MQP_DELAY, MQP_DUP,
	MQP_BLACKHOLE, MQP_ADD_PROPS
};

enum mqp_mode { MQP_FORWARD = 0, MQP_HOLD = 1, MQP_REFUSE = 2 };

struct mqp_rule {
	int type;          /* enum mqp_type; 0: any */
	int dir;           /* enum mqp_dir; 0 counts as MQP_BOTH */
	int level;         /* protocol level of the connection; 0: any */
	const char *topic; /* see above; copied; NULL: any */
	int qos_mask;      /* PUBLISH only: bit 1 << QoS matches; 0: any */
	int nth;           /* 0: every match; N: the Nth match only */
	int times;         /* 0: unbounded; N: act at most N times */
	int action;        /* enum mqp_action */
	int delay_ms;      /* MQP_DELAY */
	unsigned char props[32]; /* MQP_ADD_PROPS */
	size_t props_len;
};

struct mqp;

/* Starts the proxy in front of 127.0.0.1:dst_port; fails the test if it
 * cannot. */
struct mqp *mqp_start(int dst_port);
struct mqp *mqp_start_raw(int dst_port);
/* Closes every connection, joins every thread, frees. NULL is fine. */
void mqp_stop(struct mqp *p);

int mqp_port(const struct mqp *p);
/* "tcp://127.0.0.1:<port>" (valid as long as p). */
const char *mqp_url(const struct mqp *p);

/* Adds a rule; returns its id (>= 0) for mqp_fired(). */
int mqp_add(struct mqp *p, const struct mqp_rule *r);
/* Removes every rule (mqp_fired still answers for their ids). */
void mqp_clear(struct mqp *p);
/* Times rule id acted. */
int mqp_fired(struct mqp *p, int id);

void mqp_mode(struct mqp *p, int mode);
void mqp_dst(struct mqp *p, int dst_port);
/* Closes every open connection (both sockets); returns how many. */
int mqp_cut_all(struct mqp *p);

/* Packets of a type seen in a direction (MQP_C2S or MQP_S2C), before the
 * rules acted on them; type 0: all packets. */
int mqp_count(struct mqp *p, int dir, int type);
/* Connections accepted so far; open now. */
int mqp_accepted(struct mqp *p);
int mqp_open(struct mqp *p);
/* Zeroes the packet counts. */
void mqp_reset_counts(struct mqp *p);

/* Protocol level of the last CONNECT seen (0: none yet). */
int mqp_last_level(struct mqp *p);
/* Packets that could not be parsed (a remaining length over 4 bytes, a
 * PUBLISH topic longer than its packet, a reserved type 0): a corrupted
 * stream. */
int mqp_malformed(struct mqp *p);
/* The first of them: direction, why, and its first bytes in hex. */
void mqp_malformed_text(struct mqp *p, char *buf, size_t len);

/* Calls fn for every whole packet read, before the rules (on the
 * connection's thread, without the proxy's lock; fn must be thread-safe).
 * dir: MQP_C2S or MQP_S2C; pkt: the whole packet, hlen: its fixed
 * header's length; level: the connection's protocol level. Set before
 * traffic starts. */
typedef void (*mqp_packet_fn)(void *ud, int dir, const unsigned char *pkt,
                              size_t len, size_t hlen, int level);
void mqp_observe(struct mqp *p, mqp_packet_fn fn, void *ud);

/* The name of a packet type ("PUBLISH"). */
const char *mqp_type_name(int type);

#endif
