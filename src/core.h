/*
 * Core: what every part uses and no part owns alone: the containers (hash
 * map, vector, growable byte buffer), strings and clocks, topic rules, the
 * handler tree, logging and JSON payloads. Included by internal.h only
 * (first of its headers): it needs the system headers, paho's, cJSON's
 * and civetweb_mqtt.h, which internal.h includes before it.
 */
#ifndef CWM_CORE_H
#define CWM_CORE_H

struct cwm_event; /* client.h */

/* ------------------------------------------------------------------------
 * Containers
 * ---------------------------------------------------------------------- */

/* A string-keyed hash map with chaining; keys are copied. */
struct cwm_map_ent {
	struct cwm_map_ent *next;
	uint32_t hash;
	size_t klen;
	void *val;
	char key[];
};

struct cwm_map {
	struct cwm_map_ent **b;
	size_t nb; /* buckets, a power of two (0 before first insert) */
	size_t n;  /* entries */
};

struct cwm_vec {
	void **v;
	size_t n, cap;
};

/* A growable byte buffer; on allocation failure it stops growing and
 * remembers it (oom). */
struct cwm_wbuf {
	unsigned char *p;
	size_t n, cap;
	int oom;
};

/* Intrusive lists, for any struct whose link fields are named:
 * CWM_FIFO_PUSH appends e to a singly linked FIFO (first .. last);
 * CWM_DL_APPEND appends e to a doubly linked list (first .. last);
 * CWM_DL_UNLINK takes e out of one, and CWM_DL_UNLINK_HEAD out of one
 * that keeps no pointer to its last element. */
#define CWM_FIFO_PUSH(first, last, e, next)                                    \
	do {                                                                       \
		(e)->next = NULL;                                                      \
		if ((last) != NULL)                                                    \
			(last)->next = (e);                                                \
		else                                                                   \
			(first) = (e);                                                     \
		(last) = (e);                                                          \
	} while (0)
#define CWM_DL_APPEND(first, last, e, prev, next)                              \
	do {                                                                       \
		(e)->prev = (last);                                                    \
		CWM_FIFO_PUSH(first, last, e, next);                                   \
	} while (0)
#define CWM_DL_UNLINK_HEAD(first, e, prev, next)                               \
	do {                                                                       \
		if ((e)->prev != NULL)                                                 \
			(e)->prev->next = (e)->next;                                       \
		else                                                                   \
			(first) = (e)->next;                                               \
		if ((e)->next != NULL)                                                 \
			(e)->next->prev = (e)->prev;                                       \
	} while (0)
#define CWM_DL_UNLINK(first, last, e, prev, next)                              \
	do {                                                                       \
		if ((e)->next == NULL)                                                 \
			(last) = (e)->prev;                                                \
		CWM_DL_UNLINK_HEAD(first, e, prev, next);                              \
	} while (0)

/* ------------------------------------------------------------------------
 * Topics and the handler tree
 * ---------------------------------------------------------------------- */

/* Named levels: "home/{room}/temperature". */
struct mg_mqtt_params {
	int n;
	struct {
		int level;        /* 0-based, in the filter without $share/<g>/ */
		const char *name; /* NUL-terminated, in the same block */
	} p[];
};

struct cwm_handler {
	struct cwm_handler *next; /* next handler at the same node */
	mg_mqtt_message_handler fn;
	void *ud;
	unsigned seq;             /* registration order */
	struct mg_mqtt_params *params; /* its filter's {names}; NULL: none */
	int64_t since;            /* bridge: when the browser subscribed (ms) */
};

struct cwm_tnode {
	struct cwm_map kids;      /* level -> struct cwm_tnode * */
	struct cwm_tnode *plus;   /* "+" child */
	struct cwm_tnode *hash;   /* "#" child */
	struct cwm_handler *handlers, *last;
	struct cwm_tnode *up;     /* the parent (NULL for a tree's root) */
	struct cwm_tnode *fnext;  /* the free list of cwm_tnode_free */
};

/* ------------------------------------------------------------------------
 * Functions of the core parts, by part
 * ---------------------------------------------------------------------- */

/* src/util.c */
static char *cwm_strndup(const char *s, size_t n);
static char *cwm_strdup(const char *s);
static void cwm_freev(void *const *v, size_t n);
#define CWM_FREE_ALL(...)                                                      \
	cwm_freev((void *const[]){__VA_ARGS__},                                    \
	          sizeof((void *const[]){__VA_ARGS__}) / sizeof(void *))
static void cwm_strv_free(char **v, int n);
static int64_t cwm_now_ms(void);
static struct timespec cwm_deadline_us(int64_t us);
static struct timespec cwm_deadline(int64_t ms_from_now);
static void cwm_fmt(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *cwm_quote(const char *v, char out[72]);
static const char *cwm_quote_path(const char *v, char out[320]);
static void *cwm_map_get(const struct cwm_map *m, const char *k, size_t klen);
static int cwm_map_put_key(struct cwm_map *m, const char *k, size_t klen,
                           void *v, const char **stored);
static int cwm_map_put(struct cwm_map *m, const char *k, size_t klen, void *v);
static void *cwm_map_del(struct cwm_map *m, const char *k, size_t klen);
static void cwm_map_free(struct cwm_map *m, void (*free_val)(void *));
static int cwm_vec_push(struct cwm_vec *v, void *p);
static int cwm_wgrow(struct cwm_wbuf *b, size_t cap);
static int cwm_wreserve(struct cwm_wbuf *b, size_t n);
static void cwm_wreset(struct cwm_wbuf *b);
static void cwm_wput(struct cwm_wbuf *b, const void *data, size_t n);
#if MG_MQTT_ENABLE_BRIDGE
static void cwm_wprintf(struct cwm_wbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#endif
static void cwm_wput32(struct cwm_wbuf *b, uint32_t v);
static void cwm_wputs(struct cwm_wbuf *b, const void *s, size_t n);

/* src/topics.c */
static int cwm_utf8_valid(const char *s, size_t n);
static int cwm_topic_check(const char *t, size_t n);
static int cwm_share_len(const char *f, size_t n);
static size_t cwm_levels(const char *s, size_t n);
static int cwm_levels_check(const struct mg_mqtt *c, const char *f,
                            int filter);
static int cwm_filter_normalize(const char *filter, char **out,
                                struct mg_mqtt_params **params);
static int cwm_filter_normalize_owned(char **f);
static int cwm_match(const char *f, const char *t, size_t n);
static int cwm_utf8_text(const char *s, size_t n);

/* src/tree.c */
static void cwm_handler_free(struct cwm_handler *h);
static void cwm_tree_clear(struct cwm_tnode *root);
static int cwm_tree_add(struct cwm_tnode *root, const char *f,
                        struct cwm_handler *h);
#if MG_MQTT_ENABLE_BRIDGE
static void cwm_tree_remove(struct cwm_tnode *root, const char *f, void *ud);
#endif
static int cwm_tree_match(const struct cwm_tnode *root, const char *t, size_t n,
                          struct cwm_vec *cur, struct cwm_vec *nxt,
                          struct cwm_vec *out);

/* src/log.c */
static void cwm_log(struct mg_mqtt *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cwm_log_quiet(struct mg_mqtt *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cwm_log_locked(struct mg_mqtt *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int cwm_log_wants(const struct mg_mqtt *c, int level);
static void cwm_log_event(struct mg_mqtt *c, const struct cwm_event *ev);
static void cwm_log_push_trace(struct mg_mqtt *c, const char *line);

/* src/json.c */
static char *cwm_base64(const void *data, size_t n);
static int cwm_add_payload(cJSON *o, const void *payload, size_t len);
static void cwm_json_count(cJSON *o, const char *name,
                           const atomic_uint_fast64_t *v);
static void cwm_json_str_or_null(cJSON *o, const char *name, const char *v);

#endif /* CWM_CORE_H */
