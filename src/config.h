/*
 * Configuration: the option table's types, the settings a client reads
 * from its options, and the functions of config.c and config_check.c.
 * Included by internal.h only, after core.h.
 */
#ifndef CWM_CONFIG_H
#define CWM_CONFIG_H


#define CWM_JSON_DEPTH_LIMIT 128 /* BRIDGE_MAX_JSON_DEPTH at most: cJSON
                                   recurses once a level, and a CivetWeb
                                   worker has a 100 kB stack */

enum cwm_ktype {
	K_STR,    /* any string; "" means unset */
	K_SECRET, /* a string never echoed */
	K_PATH,   /* a file or directory name */
	K_TOPIC,  /* a topic name */
	K_BOOL,
	K_INT,    /* integer in [min, max] */
	K_NUM,    /* non-negative decimal number */
	K_ENUM
};

struct cwm_enum {
	const char *name;
	int value;
};
enum { CWM_CERT_NONE, CWM_CERT_OPTIONAL, CWM_CERT_REQUIRED };

/* Everything a client reads from its options. Strings are malloc()ed. */
struct cwm_settings {
	char *client_id;
	char *broker_url;
	int broker_port; /* 0: the scheme's default */
	char *username;
	char *password;
	char *password_file;
	int keepalive;
	int connection_timeout;
	int clean_session;
	int protocol_fallback; /* 5 refused: go on with 3.1.1 */
	int connect_async;
	double refresh_time;
	int protocol; /* 3 (3.1), 4 (3.1.1), 5 */
	int transport; /* 0 tcp, 1 websockets */
	int tls_enabled;
	char *tls_ca_certs;
	char *tls_certfile;
	char *tls_keyfile;
	char *tls_keyfile_password;
	int tls_cert_reqs;
	int tls_version;
	char *tls_ciphers;
	int tls_insecure;
	char *will_topic;
	char *will_message;
	int will_qos;
	int will_retain;
	char *birth_topic;
	char *birth_message;
	int birth_qos;
	int birth_retain;
	char *shared_group;
	char *subscribe;
	int reconnect_min;
	int reconnect_max;
	int max_inflight;
	int max_buffered;
	char *persistence_dir;
	int persistence_fsync;
	int queue_size;
	int queue_bytes; /* bytes of messages waiting for handlers, at most */
	int max_packet_size; /* the broker's packet limit, as the user knows it */
	int max_topic_levels; /* levels a topic or filter may have */
	int log_level;     /* MG_MQTT_LOG_*: lines above it are not made */
	char *bridge_path;
	char *bridge_publish_allow;
	char *bridge_subscribe_allow;
	char *bridge_auth_file;
	int bridge_max_body;
	int bridge_client_queue;
	int bridge_client_queue_bytes;
	int bridge_retained_window; /* ms */
	int bridge_last_values;
	int bridge_request_timeout_max;
	int bridge_max_json_depth;
	int bridge_nonce_lifetime;
	char *bridge_allowed_origins;
	char *bridge_allowed_hosts;
	int bridge_last_values_bytes;
	int bridge_max_clients;
	int bridge_max_filters;

	/* Derived by cwm_settings_finish(). */
	char **uris;       /* paho server URIs, fail-over order */
	int nuris;
	int use_tls;       /* some URI is ssl:// or wss:// */
	char *secret;      /* PASSWORD, or the first line of PASSWORD_FILE */
	char **sub_filters; /* parsed SUBSCRIBE */
	int *sub_qos;
	int nsubs;
	char **bpub, **bsub; /* parsed BRIDGE_PUBLISH_ALLOW / _SUBSCRIBE_ALLOW */
	int nbpub, nbsub;
	uint64_t set;        /* bit i: cwm_keys[i] was given an option */
};

struct cwm_key {
	const char *name;
	enum cwm_ktype type;
	size_t off;
	long min, max;
	const char *def;            /* default, parsed like a value; NULL: unset */
	const struct cwm_enum *en;  /* K_ENUM values */
	const char *hint;           /* "is not <hint>" in error messages */
};

#define CWM_S(f) offsetof(struct cwm_settings, f)

/* ------------------------------------------------------------------------
 * Functions of the configuration parts
 * ---------------------------------------------------------------------- */

/* src/config.c */
static char *cwm_trimdup(const char *v);
static int cwm_parse_bool(const char *v, int *out);
static int cwm_parse_long(const char *v, long min, long max, long *out);
static void cwm_settings_free(struct cwm_settings *s);
static int cwm_settings_read(struct cwm_settings *s, const char *prefix,
                             const char **options, char *err, size_t errlen);
static const char *cwm_protocol_name(int p);
static const char *cwm_bridge_key_given(const struct cwm_settings *s);
static size_t cwm_key_suffix_len(const char *name);
static void cwm_settings_json(const struct cwm_settings *s, cJSON *o);

/* src/config_check.c */
static int cwm_settings_finish(struct cwm_settings *s, const char *prefix,
                               char *err, size_t errlen);

#endif /* CWM_CONFIG_H */
