/*
 * A randomized fault test. Three clients in this process, each through its
 * own mqproxy to one persistent mosquitto, publish QoS 0/1/2 from two
 * threads each and receive; the third client's dispatch queue is kept full
 * (QUEUE_SIZE 1, a slow handler, a feeder). Meanwhile a schedule drawn from
 * a seed injects faults: packets dropped with their connection (by type),
 * connections cut after a packet, delays, duplicated PUBLISH packets,
 * silent networks, and broker restarts on the same port. Then the faults
 * stop and the invariants are checked:
 *
 *   - every QoS 1/2 publish is acknowledged or reported failed exactly once;
 *   - every acknowledged one reached the broker (a separate subscriber
 *     client counts them), QoS 2 exactly once; no QoS 0 message twice.
 *     One exception, the broker's: mosquitto 2.0 may deliver a QoS 2
 *     message to the collector again after a restart when it had already
 *     released it (PUBREL) before (struct colpub); only such a message,
 *     seen as such on the collector's own proxy, may arrive twice;
 *   - every client's subscription is granted again (a probe arrives);
 *   - no client's acknowledgements stop while another's queue is full;
 *   - no proxy saw a corrupted packet (what paho's asynchronous client sent
 *     when it resent a freed topic, before the engine left it);
 *   - no message failed as poison and no paho client was made anew (the
 *     faults are the network's and the broker's, no message's).
 *
 * FAULT_SEED picks the schedule (default: from the clock), CHAOS_SECONDS
 * its length (default 20). The seed is printed first; a failure prints the
 * command that reruns the same schedule. `make soak` runs many seeds.
 */
#include "mqproxy.h"
#include "rec.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


enum { NCLI = 3, NTHR = 2, MAXSEQ = 40000, IDMAP = 1 << 18 };

/* ---- the seeded generator (splitmix64) ---------------------------------- */

static uint64_t rng_state;
static uint64_t rng(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}
static int rnd(int n)
{
	return (int)(rng() % (uint64_t)n);
}

static unsigned long long g_seed;
static int g_seconds;
static const char *g_test;

static void dump_logs(void);

#define CHAOS_FAIL(...)                                                        \
	do {                                                                       \
		dump_logs();                                                           \
		fprintf(stderr,                                                        \
		        "    chaos: FAILED with FAULT_SEED=%llu; rerun: FAULT_SEED=%llu " \
		        "CHAOS_SECONDS=%d build/test/test_chaos %s\n",                 \
		        g_seed, g_seed, g_seconds, g_test);                            \
		th_fail(__FILE__, __LINE__, __VA_ARGS__);                              \
	} while (0)

/* ---- what each client published ----------------------------------------- */

struct msg {
	int qos;
	int id;      /* from mg_mqtt_publish */
	int reports; /* on_publish calls */
	int result;
};

struct cli {
	int n;
	struct mg_mqtt *c;
	struct mqp *p;
	struct rec r; /* log, connects, subscriptions */
	pthread_mutex_t mu;
	struct msg msgs[NTHR][MAXSEQ];
	int nmsgs[NTHR];
	/* id -> thread*MAXSEQ+seq + 1 (0: free) */
	int *idmap_key, *idmap_val;
	int unknown_reports; /* on_publish for an id never returned */
	atomic_int acks;     /* QoS 1/2 acknowledged */
	atomic_int probe;    /* the end-of-run probe arrived */
	atomic_int slow;     /* handler sleeps on flood messages */
	atomic_int flood_seen;
	int marker_id; /* the end-of-run marker's publish */
	char id[32], prefix[8];
};

static struct cli g_cli[NCLI];
static struct rec *g_rcol;

/* CHAOS_DEBUG: each client's log (and the collector's) into the test
 * directory, which a failure keeps. */
static void dump_one(struct rec *r, const char *name)
{
	char path[512];
	if (r == NULL)
		return;
	th_path(path, sizeof(path), name);
	pthread_mutex_lock(&r->mu);
	th_write_file(path, r->log != NULL ? r->log : "");
	pthread_mutex_unlock(&r->mu);
}

static void dump_logs(void)
{
	if (getenv("CHAOS_DEBUG") == NULL)
		return;
	for (int i = 0; i < NCLI; i++) {
		char name[32];
		snprintf(name, sizeof(name), "client-C%d.log", i);
		dump_one(&g_cli[i].r, name);
	}
	dump_one(g_rcol, "client-COL.log");
}

/* What the proxies saw the clients send: for each QoS 2 message, the
 * packet id of its first PUBLISH and how many PUBLISH packets with another
 * id carried it (a message sent again as a new message: the broker cannot
 * tell it is a resend). */
static _Atomic int g_q2_pid[NCLI][NTHR][MAXSEQ];
static _Atomic int g_q2_newid[NCLI][NTHR][MAXSEQ];
static _Atomic int g_q2_sends[NCLI][NTHR][MAXSEQ];
static _Atomic int g_q2_pid2[NCLI][NTHR][MAXSEQ]; /* a second id, if any */

/* A QoS 2 PUBLISH of the test's ("c<ci> t<ti> n<seq> q<qos>"): 1 with its
 * packet id and message indexes, 0 for any other packet. */
static int q2_publish(const unsigned char *pkt, size_t len, size_t hlen,
                      int *pid, int *ci, int *ti, int *seq)
{
	if ((pkt[0] >> 4) != MQP_PUBLISH || ((pkt[0] >> 1) & 3) != 2 ||
	    len < hlen + 2)
		return 0;
	const unsigned char *b = pkt + hlen;
	size_t n = len - hlen, tl = (size_t)b[0] << 8 | b[1];
	if (2 + tl + 2 > n)
		return 0;
	*pid = b[2 + tl] << 8 | b[3 + tl];
	char text[64];
	size_t pl = n - 4 - tl;
	snprintf(text, sizeof(text), "%.*s", (int)(pl < 63 ? pl : 63),
	         (const char *)b + 4 + tl);
	int qos;
	return sscanf(text, "c%d t%d n%d q%d", ci, ti, seq, &qos) == 4 &&
	       *ci >= 0 && *ci < NCLI && *ti >= 0 && *ti < NTHR && *seq >= 0 &&
	       *seq < MAXSEQ;
}

static void observe_c2s(void *ud, int dir, const unsigned char *pkt,
                        size_t len, size_t hlen, int level)
{
	(void)ud;
	(void)level;
	int pid, ci, ti, seq;
	if (dir != MQP_C2S || !q2_publish(pkt, len, hlen, &pid, &ci, &ti, &seq))
		return;
	atomic_fetch_add(&g_q2_sends[ci][ti][seq], 1);
	int zero = 0;
	if (!atomic_compare_exchange_strong(&g_q2_pid[ci][ti][seq], &zero, pid) &&
	    zero != pid) {
		atomic_fetch_add(&g_q2_newid[ci][ti][seq], 1);
		atomic_store(&g_q2_pid2[ci][ti][seq], pid);
	}
}
static atomic_int g_stop_pub;

static void idmap_put(struct cli *k, int id, int v)
{
	unsigned h = (unsigned)id * 2654435761u % IDMAP;
	while (k->idmap_key[h] != 0 && k->idmap_key[h] != id)
		h = (h + 1) % IDMAP;
	if (k->idmap_key[h] == id)
		k->unknown_reports += 1000000; /* an id handed out twice */
	k->idmap_key[h] = id;
	k->idmap_val[h] = v;
}

static int idmap_get(struct cli *k, int id)
{
	unsigned h = (unsigned)id * 2654435761u % IDMAP;
	while (k->idmap_key[h] != 0) {
		if (k->idmap_key[h] == id)
			return k->idmap_val[h];
		h = (h + 1) % IDMAP;
	}
	return 0;
}

static void cli_on_publish(struct mg_mqtt *c, int id, int result, void *ud)
{
	struct cli *k = ud;
	(void)c;
	pthread_mutex_lock(&k->mu);
	int v = idmap_get(k, id);
	if (id == k->marker_id) {
		/* the marker: not one of the counted messages */
	} else if (v == 0) {
		k->unknown_reports++;
	} else {
		struct msg *m = &k->msgs[(v - 1) / MAXSEQ][(v - 1) % MAXSEQ];
		m->reports++;
		m->result = result;
		if (m->qos > 0 && (result == 0 || result == 0x10))
			atomic_fetch_add(&k->acks, 1);
	}
	pthread_mutex_unlock(&k->mu);
}

static void cli_on_message(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                           void *ud)
{
	struct cli *k = ud;
	(void)c;
	if (strstr(m->topic, "/probe") != NULL)
		atomic_store(&k->probe, 1);
	if (strstr(m->topic, "/flood") != NULL) {
		atomic_fetch_add(&k->flood_seen, 1);
		if (atomic_load(&k->slow))
			th_sleep_ms(20);
	}
}

struct pubarg {
	struct cli *k;
	int t;
};

/* Thread t of a client: QoS cycles 0, 1, 2 (thread 1 starts at 2). */
static void *publisher(void *arg)
{
	struct pubarg *a = arg;
	struct cli *k = a->k;
	char topic[64], payload[64];
	snprintf(topic, sizeof(topic), "chaos/out/%d/%d", k->n, a->t);
	for (int seq = 0; seq < MAXSEQ && !atomic_load(&g_stop_pub); seq++) {
		int qos = (seq + 2 * a->t) % 3;
		snprintf(payload, sizeof(payload), "c%d t%d n%d q%d", k->n, a->t, seq,
		         qos);
		pthread_mutex_lock(&k->mu);
		int id = mg_mqtt_publish(k->c, topic, payload, strlen(payload), qos, 0);
		if (id > 0) {
			struct msg *m = &k->msgs[a->t][seq];
			m->qos = qos;
			m->id = id;
			idmap_put(k, id, a->t * MAXSEQ + seq + 1);
			k->nmsgs[a->t] = seq + 1;
		}
		pthread_mutex_unlock(&k->mu);
		if (id <= 0) {
			if (id != MG_MQTT_ERR_BUFFER_FULL &&
			    id != MG_MQTT_ERR_NOT_CONNECTED)
				fprintf(stderr, "    publish: %d\n", id);
			seq--; /* the same sequence number again */
			th_sleep_ms(20);
			continue;
		}
		th_sleep_ms(2);
	}
	return NULL;
}

/* ---- the collector: a separate client on the broker itself -------------- */

static _Atomic int g_seen[NCLI][NTHR][MAXSEQ];
static atomic_int g_markers, g_foreign;
/* The collector's first two arrivals of each message: packet id, DUP, and
 * when (ms since the start of the run), to tell where a duplicate came
 * from; and when the broker restarted. */
struct arrival {
	int pid, dup;
	int64_t at;
};
static struct arrival g_arr[NCLI][NTHR][MAXSEQ][2];
static int64_t g_t_begin;
static int64_t g_restart_at[16];
static atomic_int g_nrestart;

/* What the collector's proxy (faults: none) saw the broker send it, for
 * each QoS 2 message: its first two PUBLISH packets (packet id, DUP, and
 * the broker's generation: restarts before that connection's CONNACK),
 * and whether a PUBREL for the first went out in the first's generation.
 * mosquitto 2.0 can lose a released delivery at its restart: it had sent
 * PUBLISH and PUBREL (the collector's paho delivered it then, answered
 * PUBCOMP and forgot the id), and after the restart sends the PUBLISH
 * again (DUP, same packet id), which paho must take as a new message. */
struct colpub {
	_Atomic int n, pid[2], dup[2], gen[2], released;
};
static struct colpub g_colpub[NCLI * NTHR * MAXSEQ];
static _Atomic int g_col_gen, g_pid_msg[65536];

static void observe_col(void *ud, int dir, const unsigned char *pkt,
                        size_t len, size_t hlen, int level)
{
	(void)ud;
	(void)level;
	int type = pkt[0] >> 4;
	if (dir != MQP_S2C)
		return;
	if (type == MQP_CONNACK) {
		atomic_store(&g_col_gen, atomic_load(&g_nrestart));
		return;
	}
	if (type == MQP_PUBREL && len >= hlen + 2) {
		int pid = pkt[hlen] << 8 | pkt[hlen + 1];
		int v = atomic_load(&g_pid_msg[pid]);
		struct colpub *cp = v > 0 ? &g_colpub[v - 1] : NULL;
		if (cp != NULL && atomic_load(&cp->n) == 1 &&
		    atomic_load(&cp->gen[0]) == atomic_load(&g_col_gen))
			atomic_store(&cp->released, 1);
		return;
	}
	int pid, ci, ti, seq;
	if (!q2_publish(pkt, len, hlen, &pid, &ci, &ti, &seq))
		return;
	int v = (ci * NTHR + ti) * MAXSEQ + seq;
	struct colpub *cp = &g_colpub[v];
	int k = atomic_fetch_add(&cp->n, 1);
	if (k < 2) {
		atomic_store(&cp->pid[k], pid);
		atomic_store(&cp->dup[k], (pkt[0] >> 3) & 1);
		atomic_store(&cp->gen[k], atomic_load(&g_col_gen));
	}
	atomic_store(&g_pid_msg[pid], v + 1);
}

/* A QoS 2 message the collector got twice because the broker's restart
 * lost its released delivery (see struct colpub); nothing else may
 * arrive twice. */
static int lost_at_restart(int ci, int ti, int seq)
{
	struct colpub *cp = &g_colpub[(ci * NTHR + ti) * MAXSEQ + seq];
	return atomic_load(&cp->n) == 2 && atomic_load(&cp->released) &&
	       atomic_load(&cp->pid[0]) == atomic_load(&cp->pid[1]) &&
	       atomic_load(&cp->dup[1]) == 1 &&
	       atomic_load(&cp->gen[1]) > atomic_load(&cp->gen[0]);
}

static void collector_on_message(struct mg_mqtt *c,
                                 const struct mg_mqtt_message *m, void *ud)
{
	int ci, ti, seq, qos;
	char text[64];
	(void)c;
	(void)ud;
	snprintf(text, sizeof(text), "%.*s",
	         (int)(m->payload_len < 63 ? m->payload_len : 63),
	         (const char *)m->payload);
	if (strcmp(text, "marker") == 0) {
		atomic_fetch_add(&g_markers, 1);
		return;
	}
	if (sscanf(text, "c%d t%d n%d q%d", &ci, &ti, &seq, &qos) != 4 || ci < 0 ||
	    ci >= NCLI || ti < 0 || ti >= NTHR || seq < 0 || seq >= MAXSEQ) {
		atomic_fetch_add(&g_foreign, 1);
		return;
	}
	int nth = atomic_fetch_add(&g_seen[ci][ti][seq], 1);
	if (nth < 2)
		g_arr[ci][ti][seq][nth] = (struct arrival){
		    m->packet_id, m->dup, th_now_ms() - g_t_begin};
}

/* ---- the fault schedule -------------------------------------------------- */

static const char *persistent_conf =
    "listener {PORT} 127.0.0.1\nallow_anonymous true\n"
    "max_queued_messages 0\nmax_inflight_messages 0\n"
    "persistence true\npersistence_location {DIR}/bdata/\n"
    "autosave_interval 1\n";

struct fault_pick {
	int type, dir;
};
static const struct fault_pick g_picks[] = {
    {MQP_PUBLISH, MQP_C2S},   {MQP_PUBLISH, MQP_S2C},  {MQP_PUBACK, MQP_S2C},
    {MQP_PUBACK, MQP_C2S},    {MQP_PUBREC, MQP_S2C},   {MQP_PUBREC, MQP_C2S},
    {MQP_PUBREL, MQP_C2S},    {MQP_PUBREL, MQP_S2C},   {MQP_PUBCOMP, MQP_S2C},
    {MQP_PUBCOMP, MQP_C2S},   {MQP_SUBSCRIBE, MQP_C2S}, {MQP_SUBACK, MQP_S2C},
    {MQP_CONNACK, MQP_S2C},   {MQP_PINGRESP, MQP_S2C},
};

/* One step of the schedule; returns how long to wait before the next. */
/* CHAOS_FAULTS: the kinds drawn, letters of "rpdDcs" (restart, packet
 * drop/cut, delay, duplicate, cut, silent); default all. A step of a kind
 * left out is skipped (the schedule then differs from the full one). */
static int fault_allowed(char kind)
{
	const char *k = getenv("CHAOS_FAULTS");
	return k == NULL || strchr(k, kind) != NULL;
}

static int fault_step(struct th_broker *b, int *restarts, int64_t left_ms)
{
	int kind = rnd(100);
	char letter = kind < 8 ? 'r' : kind < 40 ? 'p' : kind < 55 ? 'd'
	            : kind < 68 ? 'D' : kind < 88 ? 'c' : 's';
	if (!fault_allowed(letter)) {
		rnd(NCLI), rnd(64), rnd(64), rnd(64);
		return 200 + rnd(1000);
	}
	struct cli *k = &g_cli[rnd(NCLI)];
	struct mqp *p = k->p;
	if (letter == 'r') {
		/* At most one every 6 s, none in the last 4 s. */
		if (*restarts < g_seconds / 6 && left_ms > 4000) {
			fprintf(stderr, "    chaos: broker restart\n");
			if (g_nrestart < 16)
				g_restart_at[g_nrestart] = th_now_ms() - g_t_begin;
			atomic_fetch_add(&g_nrestart, 1);
			th_broker_restart(b);
			(*restarts)++;
		}
	} else if (letter == 'p') {
		const struct fault_pick *f = &g_picks[rnd(sizeof(g_picks) /
		                                          sizeof(g_picks[0]))];
		int after = rnd(2), nth = 1 + rnd(30);
		fprintf(stderr, "    chaos: %s the %dth %s %s on %s\n",
		        after ? "cut after" : "drop and cut at", nth,
		        mqp_type_name(f->type), f->dir == MQP_C2S ? "c->s" : "s->c",
		        k->prefix);
		mqp_add(p, &(struct mqp_rule){.type = f->type,
		                              .dir = f->dir,
		                              .nth = nth,
		                              .times = 1,
		                              .action = after ? MQP_CUT_AFTER
		                                              : MQP_CUT_BEFORE});
	} else if (letter == 'd') {
		int ms = 20 + rnd(400), nth = 1 + rnd(50);
		fprintf(stderr, "    chaos: delay the %dth packet by %d ms on %s\n",
		        nth, ms, k->prefix);
		mqp_add(p, &(struct mqp_rule){
		               .nth = nth, .times = 1, .action = MQP_DELAY,
		               .delay_ms = ms});
	} else if (letter == 'D') {
		int dir = rnd(2) ? MQP_C2S : MQP_S2C, nth = 1 + rnd(50);
		fprintf(stderr, "    chaos: duplicate the %dth PUBLISH %s on %s\n",
		        nth, dir == MQP_C2S ? "c->s (QoS 1)" : "s->c", k->prefix);
		/* Towards the broker QoS 1 only: a duplicated QoS 0 PUBLISH would
		 * be the proxy's own duplicate, and a QoS 2 one the broker drops. */
		mqp_add(p, &(struct mqp_rule){.type = MQP_PUBLISH,
		                              .dir = dir,
		                              .qos_mask = dir == MQP_C2S ? 1 << 1 : 0,
		                              .nth = nth,
		                              .times = 1,
		                              .action = MQP_DUP});
	} else if (letter == 'c') {
		fprintf(stderr, "    chaos: cut %s\n", k->prefix);
		mqp_cut_all(p);
	} else {
		int ms = 500 + rnd(2000);
		fprintf(stderr, "    chaos: %s silent for %d ms, then cut\n",
		        k->prefix, ms);
		mqp_mode(p, MQP_HOLD);
		th_sleep_ms(ms);
		mqp_mode(p, MQP_FORWARD);
		mqp_cut_all(p);
	}
	/* Rules not yet matched are dropped every few steps. */
	if (rnd(4) == 0)
		mqp_clear(p);
	return 200 + rnd(1000);
}

/* ---- the run ------------------------------------------------------------- */

static void *stopper(void *arg)
{
	mg_mqtt_stop(arg);
	return NULL;
}

static void chaos_run(unsigned long long seed_offset, const char *name)
{
	struct th_broker b;
	struct rec rcol, rfeed;
	char err[1024], dir[512];
	const char *env = getenv("FAULT_SEED");
	g_seed = env != NULL ? strtoull(env, NULL, 10)
	                     : (unsigned long long)time(NULL) * 1000 +
	                           (unsigned long long)(getpid() % 1000);
	g_seed += seed_offset;
	env = getenv("CHAOS_SECONDS");
	g_seconds = env != NULL ? atoi(env) : 20;
	if (g_seconds < 5)
		g_seconds = 5;
	if (g_seconds > 90)
		g_seconds = 90;
	g_test = name;
	rng_state = g_seed;
	fprintf(stderr, "    chaos: FAULT_SEED=%llu CHAOS_SECONDS=%d\n", g_seed,
	        g_seconds);

	int64_t t_begin = th_now_ms();
	g_t_begin = t_begin;
	/* CHAOS_DEBUG=1: every client logs at LOG_LEVEL debug, and a failure
	 * writes each client's log next to the broker's (test files kept). */
	const char *lvl = getenv("CHAOS_DEBUG") != NULL ? "debug" : "info";
	th_path(dir, sizeof(dir), "bdata");
	mkdir(dir, 0777);
	th_chmod_world(dir);
	th_broker_start(&b, persistent_conf);

	/* The collector and the feeder talk to the broker directly. */
	/* The collector's proxy injects nothing: it tells what the broker
	 * sent (observe_col). */
	struct mqp *colp = mqp_start(b.port);
	mqp_observe(colp, observe_col, NULL);
	struct mg_mqtt *col = rec_client(&rcol, "COL");
	g_rcol = &rcol;
	ASSERT_EQ(mg_mqtt_on_message(col, collector_on_message, NULL), 0);
	rec_start(col, OPTS("COL_BROKER_URL", mqp_url(colp), "COL_CLIENT_ID", "chaos-col",
	                    "COL_CLEAN_SESSION", "false", "COL_SUBSCRIBE",
	                    "chaos/out/#:2", "COL_RECONNECT_MIN", "1",
	                    "COL_RECONNECT_MAX", "1", "COL_MAX_INFLIGHT", "100", "COL_LOG_LEVEL", lvl));
	ASSERT(WAIT_UNTIL(rec_subs_settled(col, 1), 10000));

	for (int i = 0; i < NCLI; i++) {
		struct cli *k = &g_cli[i];
		char url[64], sub[64], opt[NCLI][10][48];
		memset(k, 0, offsetof(struct cli, msgs));
		memset(k->nmsgs, 0, sizeof(k->nmsgs));
		k->n = i;
		pthread_mutex_init(&k->mu, NULL);
		k->idmap_key = calloc(IDMAP, sizeof(int));
		k->idmap_val = calloc(IDMAP, sizeof(int));
		ASSERT(k->idmap_key != NULL && k->idmap_val != NULL);
		snprintf(k->prefix, sizeof(k->prefix), "C%d", i);
		snprintf(k->id, sizeof(k->id), "chaos-%d", i);
		k->p = mqp_start(b.port);
		mqp_observe(k->p, observe_c2s, NULL);
		k->c = rec_client(&k->r, k->prefix);
		ASSERT_EQ(mg_mqtt_on_publish(k->c, cli_on_publish, k), 0);
		ASSERT_EQ(mg_mqtt_on_message(k->c, cli_on_message, k), 0);
		snprintf(url, sizeof(url), "%s", mqp_url(k->p));
		snprintf(sub, sizeof(sub), "chaos/in/%d/#:1", i);
		/* CONNECT_ASYNC: the clients connect at the same time (a second
		 * client's synchronous start takes about 2 s). */
		const char *keys[] = {"BROKER_URL",    "CLIENT_ID",     "CLEAN_SESSION",
		                      "SUBSCRIBE",     "RECONNECT_MIN", "RECONNECT_MAX",
		                      "QUEUE_SIZE",    "CONNECTION_TIMEOUT",
		                      "CONNECT_ASYNC", "LOG_LEVEL"};
		const char *vals[] = {url, k->id, "false", sub, "1", "2",
		                      i == 2 ? "1" : "10000", "3", "true", lvl};
		const char *o[2 * 10 + 1];
		for (int j = 0; j < 10; j++) {
			snprintf(opt[i][j], sizeof(opt[i][j]), "%s_%s", k->prefix,
			         keys[j]);
			o[2 * j] = opt[i][j];
			o[2 * j + 1] = vals[j];
		}
		o[20] = NULL;
		int rc = mg_mqtt_start(k->c, NULL, o, err, sizeof(err));
		if (rc != 0)
			th_fail(__FILE__, __LINE__, "start %s: %s", k->prefix, err);
	}
	/* The third client's queue is kept full. */
	struct mg_mqtt *feed = mg_mqtt_create("FEED");
	rec_init(&rfeed);
	rec_attach(feed, &rfeed);
	rec_start(feed, OPTS("FEED_BROKER_URL", b.url, "FEED_RECONNECT_MIN", "1",
	                     "FEED_RECONNECT_MAX", "1", "FEED_CONNECT_ASYNC",
	                     "true"));
	for (int i = 0; i < NCLI; i++)
		ASSERT(WAIT_UNTIL(rec_subs_settled(g_cli[i].c, 1), 15000));
	ASSERT(WAIT_UNTIL(mg_mqtt_is_connected(feed), 15000));
	/* CHAOS_FULL_QUEUE=0 leaves C2's queue alone (to tell the faults'
	 * effects from the full queue's when a seed fails). */
	env = getenv("CHAOS_FULL_QUEUE");
	int full_queue = env == NULL || atoi(env) != 0;
	atomic_store(&g_cli[2].slow, full_queue);

	atomic_store(&g_stop_pub, 0);
	pthread_t th[NCLI][NTHR];
	struct pubarg pa[NCLI][NTHR];
	for (int i = 0; i < NCLI; i++)
		for (int t = 0; t < NTHR; t++) {
			pa[i][t] = (struct pubarg){&g_cli[i], t};
			ASSERT_EQ(pthread_create(&th[i][t], NULL, publisher, &pa[i][t]),
			          0);
		}

	/* The schedule, with the feeder's flood in between steps. */
	fprintf(stderr, "    chaos: set up in %lld ms\n",
	        (long long)(th_now_ms() - t_begin));
	int64_t t0 = th_now_ms(), end = t0 + g_seconds * 1000LL, next = t0 + 500;
	int restarts = 0, steps = 0;
	while (th_now_ms() < end) {
		for (int k = 0; full_queue && k < 20; k++)
			mg_mqtt_publish(feed, "chaos/in/2/flood", "f", 1, 1, 0);
		if (th_now_ms() >= next) {
			int wait = fault_step(&b, &restarts, end - th_now_ms());
			steps++;
			next = th_now_ms() + wait;
		}
		th_sleep_ms(20);
	}
	int64_t chaos_ms = th_now_ms() - t0;
	atomic_store(&g_stop_pub, 1);
	for (int i = 0; i < NCLI; i++)
		for (int t = 0; t < NTHR; t++)
			pthread_join(th[i][t], NULL);
	int acks_during[NCLI];
	for (int i = 0; i < NCLI; i++)
		acks_during[i] = atomic_load(&g_cli[i].acks);
	atomic_store(&g_cli[2].slow, 0);

	/* Healing: no more faults. */
	if (b.pid == 0)
		th_broker_restart(&b);
	for (int i = 0; i < NCLI; i++) {
		mqp_clear(g_cli[i].p);
		mqp_mode(g_cli[i].p, MQP_FORWARD);
	}
	fprintf(stderr,
	        "    chaos: %d steps, %d broker restarts in %lld ms; QoS 1/2 "
	        "acknowledged meanwhile: %d, %d, %d%s\n",
	        steps, restarts, (long long)chaos_ms, acks_during[0],
	        acks_during[1], acks_during[2],
	        full_queue ? " (client C2's queue full)" : "");

	/* Every QoS 1/2 publish reported (bounded: a stuck message is a
	 * failure, not a hang). */
	int64_t settle_until = th_now_ms() + 60000LL * th_timeout_scale();
	for (int i = 0; i < NCLI; i++) {
		struct cli *k = &g_cli[i];
		for (;;) {
			int pending = 0, first = -1, ft = 0;
			pthread_mutex_lock(&k->mu);
			for (int t = 0; t < NTHR; t++)
				for (int s = 0; s < k->nmsgs[t]; s++)
					if (k->msgs[t][s].qos > 0 && k->msgs[t][s].reports == 0) {
						if (pending++ == 0) {
							first = s;
							ft = t;
						}
					}
			pthread_mutex_unlock(&k->mu);
			if (pending == 0)
				break;
			/* A corrupted stream does not heal: say so at once. */
			if (th_now_ms() > settle_until ||
			    (mqp_malformed(k->p) > 0 &&
			     th_now_ms() > settle_until - 50000LL * th_timeout_scale())) {
				char st[4096], bad[256];
				mg_mqtt_status(k->c, st, sizeof(st));
				mqp_malformed_text(k->p, bad, sizeof(bad));
				CHAOS_FAIL("%s: %d QoS 1/2 publishes never reported (first "
				           "t%d n%d); proxy saw %d malformed packets (first: "
				           "%s); status %.1500s",
				           k->prefix, pending, ft, first,
				           mqp_malformed(k->p), bad, st);
			}
			th_sleep_ms(50);
		}
	}
	int64_t t_settled = th_now_ms();
	/* Corrupted packets fail the run after the delivery checks (which
	 * then say what the recovery from them cost). */
	int corrupt = 0;
	char corrupt_text[512] = "";
	for (int i = 0; i < NCLI; i++)
		if (mqp_malformed(g_cli[i].p) != 0 && corrupt++ == 0) {
			char bad[256];
			mqp_malformed_text(g_cli[i].p, bad, sizeof(bad));
			snprintf(corrupt_text, sizeof(corrupt_text),
			         "%s: the proxy saw %d corrupted packets (first: %s)",
			         g_cli[i].prefix, mqp_malformed(g_cli[i].p), bad);
		}

	/* A marker from each client after everything: once the collector has
	 * them, it has whatever it will get. */
	for (int i = 0; i < NCLI; i++) {
		pthread_mutex_lock(&g_cli[i].mu);
		g_cli[i].marker_id = mg_mqtt_publish(g_cli[i].c, "chaos/out/marker",
		                                     "marker", 6, 2, 0);
		pthread_mutex_unlock(&g_cli[i].mu);
		ASSERT_GT(g_cli[i].marker_id, 0);
	}
	if (!WAIT_UNTIL(atomic_load(&g_markers) >= NCLI, 30000))
		CHAOS_FAIL("the collector got %d of %d markers",
		           atomic_load(&g_markers), NCLI);

	/* Invariants on what was published. */
	long total[3] = {0, 0, 0}, acked = 0, failed = 0;
	int dup2 = 0, restart_dups = 0;
	for (int i = 0; i < NCLI; i++) {
		struct cli *k = &g_cli[i];
		pthread_mutex_lock(&k->mu);
		if (k->unknown_reports != 0)
			CHAOS_FAIL("%s: %d reports for ids never handed out (or an id "
			           "handed out twice)",
			           k->prefix, k->unknown_reports);
		for (int t = 0; t < NTHR; t++)
			for (int s = 0; s < k->nmsgs[t]; s++) {
				struct msg *m = &k->msgs[t][s];
				int seen = atomic_load(&g_seen[i][t][s]);
				total[m->qos]++;
				if (m->qos > 0 && m->reports != 1)
					CHAOS_FAIL("%s t%d n%d (QoS %d, id %d): %d reports", k->prefix,
					           t, s, m->qos, m->id, m->reports);
				int ok = m->result == 0 || m->result == 0x10;
				if (m->qos > 0) {
					acked += ok;
					failed += !ok;
				}
				if (m->qos > 0 && ok && seen == 0)
					CHAOS_FAIL("%s t%d n%d (QoS %d) acknowledged, never reached "
					           "the broker",
					           k->prefix, t, s, m->qos);
				if (m->qos == 2 && seen == 2 && lost_at_restart(i, t, s)) {
					restart_dups++;
				} else if (m->qos == 2 && seen > 1) {
					/* All of them are listed, with what tells their origin
					 * apart, before the run fails. */
					const struct arrival *a = g_arr[i][t][s];
					if (dup2++ < 40)
						fprintf(stderr,
						        "    chaos: %s t%d n%d (QoS 2, id %d) reached the "
						        "broker %d times; the client sent it in %d PUBLISH "
						        "packets under %d packet id(s) (%d, %d)%s; "
						        "collector got pid %d dup %d at %lld ms, pid %d "
						        "dup %d at %lld ms\n",
						        k->prefix, t, s, m->id, seen,
						        atomic_load(&g_q2_sends[i][t][s]),
						        1 + atomic_load(&g_q2_newid[i][t][s]),
						        atomic_load(&g_q2_pid[i][t][s]),
						        atomic_load(&g_q2_pid2[i][t][s]),
						        atomic_load(&g_q2_newid[i][t][s]) > 0
						            ? " (sent again as a new message)"
						            : " (the broker or the collector "
						              "duplicated it)",
						        a[0].pid, a[0].dup, (long long)a[0].at, a[1].pid,
						        a[1].dup, (long long)a[1].at);
				}
				if (m->qos == 0 && seen > 1)
					CHAOS_FAIL("%s t%d n%d (QoS 0) reached the broker %d times",
					           k->prefix, t, s, seen);
			}
		pthread_mutex_unlock(&k->mu);
	}
	if (dup2 > 0) {
		char rs[256] = "";
		size_t u = 0;
		for (int i = 0; i < g_nrestart && u < sizeof(rs); i++)
			u += (size_t)snprintf(rs + u, sizeof(rs) - u, " %lld",
			                      (long long)g_restart_at[i]);
		CHAOS_FAIL("%d QoS 2 messages reached the broker more than once "
		           "(listed above); broker restarts at (ms):%s",
		           dup2, u > 0 ? rs : " none");
	}
	if (corrupt > 0)
		CHAOS_FAIL("%s", corrupt_text);
	if (atomic_load(&g_foreign) != 0)
		CHAOS_FAIL("the collector got %d messages it cannot parse",
		           atomic_load(&g_foreign));
	fprintf(stderr,
	        "    chaos: published QoS 0/1/2: %ld/%ld/%ld; QoS 1/2 acknowledged "
	        "%ld, failed %ld; QoS 2 delivered again by the broker after its "
	        "restart (released before it): %d\n",
	        total[0], total[1], total[2], acked, failed, restart_dups);

	/* No message was taken for poison, no paho client made anew. */
	for (int i = 0; i < NCLI; i++) {
		char st[16384];
		mg_mqtt_status(g_cli[i].c, st, sizeof(st));
		if (strstr(st, "\"poisoned\":0") == NULL ||
		    strstr(st, "\"paho_renewals\":0") == NULL)
			CHAOS_FAIL("%s: a message failed as poison or a new paho client: "
			           "%.1500s",
			           g_cli[i].prefix, st);
	}

	/* Every subscription granted again: a probe to each client arrives. */
	for (int i = 0; i < NCLI; i++) {
		struct cli *k = &g_cli[i];
		char topic[64];
		snprintf(topic, sizeof(topic), "chaos/in/%d/probe", i);
		int got = 0;
		for (int tries = 0; tries < 10 && !got; tries++) {
			mg_mqtt_publish(feed, topic, "p", 1, 1, 0);
			got = WAIT_UNTIL(atomic_load(&k->probe), 2000);
		}
		if (!got || !rec_subs_settled(k->c, 1)) {
			char st[4096];
			mg_mqtt_status(k->c, st, sizeof(st));
			CHAOS_FAIL("%s: its subscription was not granted again after the "
			           "reconnects; status %.1500s",
			           k->prefix, st);
		}
	}

	/* Acknowledgements went on for every other client while C2's queue
	 * was full: at least 50 a second on average, under sanitizers less
	 * (the publishers offer about 650 a second; a stalled process
	 * acknowledges about 4 a second). C2's own on_publish calls run on its
	 * dispatch thread, behind its slow handler, as the header says (one
	 * thread runs a client's handlers in order): they are not counted
	 * here; that every one of them comes, once, is checked above. */
	int min_acks = g_seconds * 50 / th_timeout_scale();
	for (int i = 0; i < NCLI; i++)
		if ((i != 2 || !full_queue) && acks_during[i] < min_acks)
			CHAOS_FAIL("%s: %d QoS 1/2 acknowledgements in %d s while C2's "
			           "queue was full",
			           g_cli[i].prefix, acks_during[i], g_seconds);

	int64_t t_checked = th_now_ms();
	/* Stop all at once (each may flush for a while). */
	pthread_t st[NCLI + 2];
	for (int i = 0; i < NCLI; i++)
		pthread_create(&st[i], NULL, stopper, g_cli[i].c);
	pthread_create(&st[NCLI], NULL, stopper, feed);
	pthread_create(&st[NCLI + 1], NULL, stopper, col);
	for (int i = 0; i < NCLI + 2; i++)
		pthread_join(st[i], NULL);
	fprintf(stderr,
	        "    chaos: all reported %lld ms after the faults ended, checked "
	        "after %lld ms, stopped after %lld ms\n",
	        (long long)(t_settled - t0 - chaos_ms),
	        (long long)(t_checked - t0 - chaos_ms),
	        (long long)(th_now_ms() - t0 - chaos_ms));
	for (int i = 0; i < NCLI; i++) {
		mqp_stop(g_cli[i].p);
		rec_free(&g_cli[i].r);
		free(g_cli[i].idmap_key);
		free(g_cli[i].idmap_val);
	}
	mqp_stop(colp);
	rec_free(&rcol);
	rec_free(&rfeed);
	int64_t t_stop = th_now_ms();
	th_broker_stop(&b);
	fprintf(stderr, "    chaos: broker stopped in %lld ms\n",
	        (long long)(th_now_ms() - t_stop));
}

TEST_T(chaos_seed_1, 200)
{
	chaos_run(0, "chaos_seed_1");
}

TEST_T(chaos_seed_2, 200)
{
	chaos_run(1, "chaos_seed_2");
}

TEST_T(chaos_seed_3, 200)
{
	chaos_run(2, "chaos_seed_3");
}
