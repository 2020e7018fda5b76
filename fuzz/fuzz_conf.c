/*
 * civetweb.conf and the options: mg_mqtt_config_read (the line reader and
 * the option split) and cwm_settings_read (every <PREFIX>_<KEY>, BROKER_URL,
 * SUBSCRIBE, the allow lists, the cross-key checks), then
 * cwm_settings_json.
 *
 * The input is used twice:
 *   1. as a civetweb.conf file (a memfd, read through /proc/self/fd/N), then
 *      cwm_settings_read for every prefix found;
 *   2. as raw "NAME VALUE" lines (split at the first space, nothing
 *      trimmed, empty values kept) given to cwm_settings_read for prefix
 *      MQTT and as overrides to mg_mqtt_config_read.
 * Values of keys that name files are replaced by a few safe paths (a
 * readable file, a directory, a missing file), so the fuzzer never opens
 * what it makes up. Secret values are replaced by a marker that must never
 * show up in an error sentence or the settings JSON.
 */
#include "../civetweb_mqtt.c"

#include "fuzz_common.h"

#include <sys/mman.h>

#define MARK "FZSECRET-9c1f"
#define MAX_PAIRS 64

static int conf_fd = -1;
static char conf_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	conf_fd = memfd_create("civetweb.conf", 0);
	if (conf_fd < 0) {
		perror("memfd_create");
		abort();
	}
	snprintf(conf_path, sizeof(conf_path), "/proc/self/fd/%d", conf_fd);
	return 0;
}

/* ---- what the option names are ----------------------------------------- */

static int has_ci(const char *s, const char *needle)
{
	return strcasestr(s, needle) != NULL;
}

/* The key part of name for prefix (NULL when name is not <prefix>_...). */
static const char *key_of(const char *name, const char *prefix)
{
	size_t pl = strlen(prefix);
	if (strncasecmp(name, prefix, pl) != 0 || name[pl] != '_')
		return NULL;
	return name + pl + 1;
}

static int is_file_key(const char *key)
{
	static const char *const files[] = {"PASSWORD_FILE", "TLS_CA_CERTS",
	                                    "TLS_CERTFILE", "TLS_KEYFILE",
	                                    "PERSISTENCE_DIR", "BRIDGE_AUTH_FILE"};
	for (size_t i = 0; i < sizeof(files) / sizeof(*files); i++)
		if (strcasecmp(key, files[i]) == 0)
			return 1;
	return 0;
}

/* A value the library must never echo: PASSWORD, TLS_KEYFILE_PASSWORD, and
 * unknown keys that look like secrets (its own list). */
static int is_secret_key(const char *key)
{
	static const char *const secretish[] = {"PAS", "PW", "SECRET", "TOKEN",
	                                        "KEY", "CRED", "AUTH"};
	if (strcasecmp(key, "PASSWORD") == 0 ||
	    strcasecmp(key, "TLS_KEYFILE_PASSWORD") == 0)
		return 1;
	if (is_file_key(key) || cwm_key_find(key, strlen(key)) != NULL)
		return 0;
	for (size_t i = 0; i < sizeof(secretish) / sizeof(*secretish); i++)
		if (has_ci(key, secretish[i]))
			return 1;
	return 0;
}

/* A path the fuzzer may let the library open, picked by the value. */
static const char *safe_path(const char *v)
{
	switch ((unsigned char)v[0] % 4) {
	case 0:
		return conf_path; /* a readable file */
	case 1:
		return "/"; /* a directory */
	case 2:
		return "/nonexistent/cwm-fuzz"; /* missing */
	default:
		return "/tmp"; /* a writable directory */
	}
}

/* Copies the list, with the values prefix reads made safe: files
 * replaced, secrets marked. Names are kept as they are. */
static void sanitize(const char **in, const char **out, size_t max,
                     const char *prefix)
{
	size_t n = 0;
	for (size_t i = 0; in[i] != NULL && n + 2 < max; i += 2) {
		const char *name = in[i], *value = in[i + 1];
		const char *key = key_of(name, prefix);
		out[n++] = name;
		if (key != NULL && is_file_key(key))
			out[n++] = safe_path(value);
		else if (key != NULL && is_secret_key(key))
			out[n++] = MARK;
		else
			out[n++] = value;
	}
	out[n] = NULL;
}

/* ---- invariants ------------------------------------------------------- */

static void check_settings(const struct cwm_settings *s)
{
	CHECK(s->nuris >= 1 && s->uris != NULL);
	int tls = 0;
	for (int i = 0; i < s->nuris; i++) {
		const char *u = s->uris[i];
		CHECKF(strncmp(u, "tcp://", 6) == 0 || strncmp(u, "ssl://", 6) == 0 ||
		           strncmp(u, "ws://", 5) == 0 || strncmp(u, "wss://", 6) == 0,
		       "uri '%s'", u);
		tls |= strncmp(u, "ssl:", 4) == 0 || strncmp(u, "wss:", 4) == 0;
		const char *host = strstr(u, "://") + 3;
		CHECKF(strchr(host, ':') != NULL, "uri '%s' has no port", u);
		for (const char *p = u; *p; p++)
			CHECKF((unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f,
			       "uri '%s' has a blank or a non-ASCII byte", u);
	}
	CHECK(s->use_tls == tls);
	for (int i = 0; i < s->nsubs; i++) {
		CHECKF(cwm_filter_check(s->sub_filters[i], strlen(s->sub_filters[i])) ==
		           0,
		       "SUBSCRIBE filter '%s'", s->sub_filters[i]);
		CHECK(s->sub_qos[i] >= 0 && s->sub_qos[i] <= 2);
	}
	for (int i = 0; i < s->nbpub; i++)
		CHECK(cwm_filter_check(s->bpub[i], strlen(s->bpub[i])) == 0);
	for (int i = 0; i < s->nbsub; i++)
		CHECK(cwm_filter_check(s->bsub[i], strlen(s->bsub[i])) == 0);
	if (s->bridge_path == NULL)
		CHECK(s->nbpub == 0 && s->nbsub == 0);
	else
		CHECKF(s->bridge_path[0] == '/' && strstr(s->bridge_path, "..") == NULL &&
		           strstr(s->bridge_path, "//") == NULL,
		       "BRIDGE_PATH '%s'", s->bridge_path);
	if (s->will_topic != NULL)
		CHECK(fz_topic_ok(s->will_topic, strlen(s->will_topic)));
	if (s->birth_topic != NULL)
		CHECK(fz_topic_ok(s->birth_topic, strlen(s->birth_topic)));
	if (s->will_message != NULL)
		CHECK(s->will_topic != NULL);
	if (s->birth_message != NULL)
		CHECK(s->birth_topic != NULL);
	if (s->shared_group != NULL)
		CHECK(strpbrk(s->shared_group, "/+#") == NULL);
	if (s->secret != NULL)
		CHECK(s->username != NULL);
	CHECK(s->reconnect_min <= s->reconnect_max);
	for (size_t i = 0; i < CWM_NKEYS; i++) {
		const struct cwm_key *k = &cwm_keys[i];
		const char *field = (const char *)s + k->off;
		if (k->type == K_INT) {
			int v = *(const int *)(const void *)field;
			if (!(k->off == CWM_S(broker_port) && v == 0))
				CHECKF(v >= k->min && v <= k->max, "%s = %d", k->name, v);
		} else if (k->type == K_STR || k->type == K_SECRET ||
		           k->type == K_TOPIC) {
			const char *v = *(char *const *)(const void *)field;
			if (v != NULL)
				CHECKF(v[0] != '\0' && fz_utf8(v, strlen(v), FZ_UTF8_MQTT),
				       "%s is empty or not MQTT UTF-8", k->name);
		} else if (k->type == K_BOOL) {
			int v = *(const int *)(const void *)field;
			CHECK(v == 0 || v == 1);
		}
	}
	CHECK(s->protocol == 3 || s->protocol == 4 || s->protocol == 5);
	CHECK(s->refresh_time >= 0 && s->refresh_time <= 1e9);
}

/* Reads the settings of prefix from list; checks the outcome. */
static void settings_for(const char *prefix, const char **list, int marked)
{
	const char *opts[2 * MAX_PAIRS + 2];
	struct cwm_settings s;
	char err[256];
	err[0] = '\0';
	sanitize(list, opts, sizeof(opts) / sizeof(*opts), prefix);
	int rc = cwm_settings_read(&s, prefix, opts, err, sizeof(err));
#ifdef FZ_STATS
	fprintf(stderr, "STAT settings %d %s\n", rc, err);
#endif
	if (rc != 0) {
		CHECKF(rc == MG_MQTT_ERR_CONFIG || rc == MG_MQTT_ERR_IO ||
		           rc == MG_MQTT_ERR_INVALID || rc == MG_MQTT_ERR_NOMEM,
		       "rc %d", rc);
		CHECKF(err[0] != '\0', "rc %d without a sentence", rc);
		if (marked)
			CHECKF(strstr(err, MARK) == NULL, "secret in '%s'", err);
	} else {
		check_settings(&s);
		cJSON *o = cJSON_CreateObject();
		cwm_settings_json(&s, o);
		char *text = cJSON_PrintUnformatted(o);
		CHECK(text != NULL);
		if (marked)
			CHECKF(strstr(text, MARK) == NULL, "secret in '%s'", text);
		cJSON *back = cJSON_Parse(text);
		CHECK(cJSON_IsObject(back));
		CHECK(cJSON_GetArraySize(back) == (int)CWM_NKEYS);
		cJSON_Delete(back);
		cJSON_free(text);
		cJSON_Delete(o);
	}
	cwm_settings_free(&s);
}

static size_t npairs(const char **l)
{
	size_t n = 0;
	while (l != NULL && l[2 * n] != NULL)
		n++;
	return n;
}

static int in_list(const char **l, const char *name, const char *value)
{
	for (size_t i = 0; l[i] != NULL; i += 2)
		if (l[i + 1] == value && strcasecmp(l[i], name) == 0)
			return 1;
	return 0;
}

/* The split: every option in exactly one of civetweb / mqtt / other, mqtt
 * names under a found prefix, prefixes upper-case and unique. */
static void check_split(const struct mg_mqtt_config *cfg, int from_file)
{
	size_t n = npairs(cfg->options);
	CHECK(npairs(cfg->civetweb) + npairs(cfg->mqtt) + npairs(cfg->other) == n);
	for (size_t i = 0; i < n; i++) {
		const char *name = cfg->options[2 * i], *v = cfg->options[2 * i + 1];
		CHECK(name[0] != '\0' || !from_file);
		for (size_t j = 0; j < i; j++)
			CHECKF(strcasecmp(cfg->options[2 * j], name) != 0,
			       "'%s' twice", name);
		int where = in_list(cfg->civetweb, name, v) + in_list(cfg->mqtt, name, v) +
		            in_list(cfg->other, name, v);
		CHECKF(where == 1, "'%s' in %d lists", name, where);
	}
	size_t np = 0;
	for (; cfg->prefixes[np] != NULL; np++) {
		const char *p = cfg->prefixes[np];
		CHECK(p[0] != '\0');
		for (const char *q = p; *q; q++)
			CHECKF((*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
			           *q == '_',
			       "prefix '%s'", p);
		for (size_t j = 0; j < np; j++)
			CHECK(strcmp(cfg->prefixes[j], p) != 0);
	}
	for (size_t i = 0; cfg->mqtt[i] != NULL; i += 2) {
		int under = 0;
		for (size_t j = 0; j < np; j++)
			under |= key_of(cfg->mqtt[i], cfg->prefixes[j]) != NULL;
		CHECKF(under, "'%s' in mqtt without its prefix", cfg->mqtt[i]);
	}
}

static int fuzz_one(const uint8_t *data, size_t size)
{
	struct mg_mqtt_config cfg;
	char err[512];
	int marked = memmem(data, size, MARK, strlen(MARK)) == NULL;

	if (size > 16384)
		return 0;

	/* 1. As a file. */
	if (ftruncate(conf_fd, 0) != 0 ||
	    pwrite(conf_fd, data, size, 0) != (ssize_t)size)
		abort();
	memset(&cfg, 0xa5, sizeof(cfg));
	int rc = mg_mqtt_config_read(&cfg, conf_path, NULL, err, sizeof(err));
	if (rc != 0) {
		CHECKF(rc == MG_MQTT_ERR_CONFIG || rc == MG_MQTT_ERR_NOMEM,
		       "config_read rc %d", rc);
		CHECK(err[0] != '\0');
		CHECK(strncmp(err, conf_path, strlen(conf_path)) == 0);
		CHECK(cfg.options == NULL && cfg.priv_ == NULL);
	} else {
		CHECK(err[0] == '\0');
		check_split(&cfg, 1);
		for (size_t i = 0; cfg.options[i] != NULL; i += 2) {
			const char *v = cfg.options[i + 1];
			size_t vl = strlen(v);
			CHECK(vl > 0 && !isspace((unsigned char)v[0]) &&
			      !isspace((unsigned char)v[vl - 1]));
			CHECK(strchr(v, '\n') == NULL);
			CHECK(strpbrk(cfg.options[i], " \t\n") == NULL);
		}
		for (size_t j = 0; j < 4 && cfg.prefixes[j] != NULL; j++)
			settings_for(cfg.prefixes[j], cfg.mqtt, marked);
		mg_mqtt_config_free(&cfg);
	}

	/* 2. As raw "NAME VALUE" lines. */
	char *copy = malloc(size + 1);
	const char *pairs[2 * MAX_PAIRS + 1];
	size_t np = 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	for (char *line = copy, *next; line != NULL && np < MAX_PAIRS;
	     line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		char *sp = strchr(line, ' ');
		if (sp == NULL)
			continue;
		*sp = '\0';
		pairs[2 * np] = line;
		pairs[2 * np + 1] = sp + 1;
		np++;
	}
	pairs[2 * np] = NULL;
	settings_for("MQTT", pairs, marked);
	rc = mg_mqtt_config_read(&cfg, NULL, pairs, err, sizeof(err));
	CHECKF(rc == 0 || rc == MG_MQTT_ERR_NOMEM, "overrides rc %d: %s", rc, err);
	if (rc == 0) {
		check_split(&cfg, 0);
		mg_mqtt_config_free(&cfg);
	}
	free(copy);
	return 0;
}

FZ_ENTRY(fuzz_one)
