/*
 * civetweb.conf files and the option split: CivetWeb's own options, each
 * MQTT prefix's, and the rest (mg_mqtt_config_read).
 */
#include "internal.h"

struct cwm_conf_store {
	char **kv;        /* name, value, ... (owned) */
	size_t n;         /* pairs in kv */
	char **prefixes;  /* owned, upper-case */
	size_t nprefixes;
	const char **lists; /* one block: options, civetweb, mqtt, other, prefixes */
};

static int cwm_conf_add(struct cwm_conf_store *st, const char *name,
                        size_t nl, const char *value, size_t vl)
{
	char *v = cwm_strndup(value, vl);
	if (v == NULL)
		return MG_MQTT_ERR_NOMEM;
	for (size_t i = 0; i < st->n; i++) {
		if (strlen(st->kv[2 * i]) == nl &&
		    strncasecmp(st->kv[2 * i], name, nl) == 0) {
			free(st->kv[2 * i + 1]);
			st->kv[2 * i + 1] = v;
			return 0;
		}
	}
	char *k = cwm_strndup(name, nl);
	char **kv = realloc(st->kv, sizeof(char *) * 2 * (st->n + 1));
	if (k == NULL || kv == NULL) {
		free(k);
		free(v);
		if (kv != NULL)
			st->kv = kv;
		return MG_MQTT_ERR_NOMEM;
	}
	st->kv = kv;
	kv[2 * st->n] = k;
	kv[2 * st->n + 1] = v;
	st->n++;
	return 0;
}

static void cwm_conf_store_free(struct cwm_conf_store *st)
{
	if (st == NULL)
		return;
	for (size_t i = 0; i < 2 * st->n; i++)
		free(st->kv[i]);
	free(st->kv);
	for (size_t i = 0; i < st->nprefixes; i++)
		free(st->prefixes[i]);
	free(st->prefixes);
	free(st->lists);
	free(st);
}

static int cwm_conf_read_file(struct cwm_conf_store *st, const char *path,
                              char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *line = NULL, q[320];
	size_t cap = 0;
	ssize_t len;
	int lineno = 0, rc = 0;

	if (f == NULL) {
		cwm_fmt(err, errlen, "cannot read '%s': %s", cwm_quote_path(path, q),
		        strerror(errno));
		return MG_MQTT_ERR_IO;
	}
	while ((len = getline(&line, &cap, f)) >= 0) {
		char *p = line;
		lineno++;
		if (lineno == 1 && (size_t)len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
			p += 3; /* UTF-8 byte order mark */
		size_t n = strlen(p);
		while (n > 0 && isspace((unsigned char)p[n - 1]))
			p[--n] = '\0';
		while (isspace((unsigned char)*p))
			p++;
		if (*p == '\0' || *p == '#')
			continue;
		size_t nl = strcspn(p, " \t");
		const char *v = p + nl;
		while (isspace((unsigned char)*v))
			v++;
		if (*v == '\0') {
			char qn[72];
			p[nl] = '\0';
			cwm_fmt(err, errlen, "%s:%d: '%s' has no value",
			        cwm_quote_path(path, q), lineno, cwm_quote(p, qn));
			rc = MG_MQTT_ERR_CONFIG;
			break;
		}
		if ((rc = cwm_conf_add(st, p, nl, v, strlen(v))) != 0)
			break;
	}
	free(line);
	fclose(f);
	return rc;
}

/* CivetWeb's spelling of name, or NULL when CivetWeb does not know it. */
static const char *cwm_civetweb_option(const char *name)
{
	const struct mg_option *o = mg_get_valid_options();
	for (; o != NULL && o->name != NULL; o++)
		if (strcasecmp(o->name, name) == 0)
			return o->name;
	return NULL;
}

/* The prefix defined by name ("MQTT2_BROKER_URL" -> "MQTT2"), as a length,
 * using the longest key it ends with; 0 when it ends in no key. */
static size_t cwm_prefix_of(const char *name)
{
	size_t sl = cwm_key_suffix_len(name);
	size_t best = sl > 0 ? strlen(name) - sl - 1 : 0;
	for (size_t i = 0; i < best; i++)
		if (!(isalnum((unsigned char)name[i]) || name[i] == '_'))
			return 0;
	return best;
}

static int cwm_conf_split(struct cwm_conf_store *st, struct mg_mqtt_config *cfg)
{
	/* Pass 1: find the prefixes. */
	for (size_t i = 0; i < st->n; i++) {
		const char *name = st->kv[2 * i];
		size_t pl;
		if (cwm_civetweb_option(name) != NULL || (pl = cwm_prefix_of(name)) == 0)
			continue;
		size_t j;
		for (j = 0; j < st->nprefixes; j++)
			if (strlen(st->prefixes[j]) == pl &&
			    strncasecmp(st->prefixes[j], name, pl) == 0)
				break;
		if (j < st->nprefixes)
			continue;
		char **np = realloc(st->prefixes, sizeof(char *) * (st->nprefixes + 1));
		if (np == NULL)
			return MG_MQTT_ERR_NOMEM;
		st->prefixes = np;
		if ((np[st->nprefixes] = cwm_strndup(name, pl)) == NULL)
			return MG_MQTT_ERR_NOMEM;
		for (char *p = np[st->nprefixes]; *p; p++)
			*p = (char)toupper((unsigned char)*p);
		st->nprefixes++;
	}

	/* Pass 2: one block holding the five lists. */
	size_t slots = 4 * (2 * st->n + 1) + st->nprefixes + 1;
	if ((st->lists = calloc(slots, sizeof(char *))) == NULL)
		return MG_MQTT_ERR_NOMEM;
	const char **all = st->lists, **cw = all + 2 * st->n + 1,
	           **mq = cw + 2 * st->n + 1, **ot = mq + 2 * st->n + 1,
	           **px = ot + 2 * st->n + 1;
	size_t na = 0, nc = 0, nm = 0, no = 0;
	for (size_t i = 0; i < st->n; i++) {
		const char *name = st->kv[2 * i], *value = st->kv[2 * i + 1];
		const char *cwname = cwm_civetweb_option(name);
		all[na++] = name;
		all[na++] = value;
		if (cwname != NULL) {
			cw[nc++] = cwname;
			cw[nc++] = value;
			continue;
		}
		size_t best = 0;
		for (size_t j = 0; j < st->nprefixes; j++) {
			size_t pl = strlen(st->prefixes[j]);
			if (pl > best && strncasecmp(name, st->prefixes[j], pl) == 0 &&
			    name[pl] == '_')
				best = pl;
		}
		if (best > 0) {
			mq[nm++] = name;
			mq[nm++] = value;
		} else {
			ot[no++] = name;
			ot[no++] = value;
		}
	}
	for (size_t j = 0; j < st->nprefixes; j++)
		px[j] = st->prefixes[j];
	cfg->options = all;
	cfg->civetweb = cw;
	cfg->mqtt = mq;
	cfg->other = ot;
	cfg->prefixes = px;
	return 0;
}

int mg_mqtt_config_read(struct mg_mqtt_config *cfg, const char *path,
                        const char **overrides, char *errbuf, size_t errlen)
{
	struct cwm_conf_store *st;
	int rc = 0;

	if (errbuf != NULL && errlen > 0)
		errbuf[0] = '\0';
	if (cfg == NULL)
		return MG_MQTT_ERR_INVALID;
	memset(cfg, 0, sizeof(*cfg));
	if ((st = calloc(1, sizeof(*st))) == NULL)
		return MG_MQTT_ERR_NOMEM;
	if (path != NULL)
		rc = cwm_conf_read_file(st, path, errbuf, errlen);
	for (size_t i = 0; rc == 0 && overrides != NULL && overrides[i] != NULL;
	     i += 2) {
		if (overrides[i + 1] == NULL) {
			char q[72];
			cwm_fmt(errbuf, errlen, "option '%s' has no value",
			        cwm_quote(overrides[i], q));
			rc = MG_MQTT_ERR_CONFIG;
			break;
		}
		rc = cwm_conf_add(st, overrides[i], strlen(overrides[i]),
		                  overrides[i + 1], strlen(overrides[i + 1]));
	}
	if (rc == 0)
		rc = cwm_conf_split(st, cfg);
	if (rc != 0) {
		if (rc == MG_MQTT_ERR_NOMEM)
			cwm_fmt(errbuf, errlen, "out of memory");
		cwm_conf_store_free(st);
		memset(cfg, 0, sizeof(*cfg));
		return rc;
	}
	cfg->priv_ = st;
	return 0;
}

/* Edit distance of a and b (case-insensitive), stopping at 3: a name
 * that close to a CivetWeb option is taken for a misspelling of it. */
static size_t cwm_edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[72];
	if (la >= 72 || lb >= 72 || (la > lb ? la - lb : lb - la) > 2)
		return 3;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t same = tolower((unsigned char)a[i - 1]) ==
			              tolower((unsigned char)b[j - 1]);
			size_t best = diag + !same;
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb] < 3 ? row[lb] : 3;
}

int mg_mqtt_config_check(const struct mg_mqtt_config *cfg, char *errbuf,
                         size_t errlen)
{
	char q[72], hint[128] = "";
	if (errbuf != NULL && errlen > 0)
		errbuf[0] = '\0';
	if (cfg == NULL || cfg->other == NULL)
		return MG_MQTT_ERR_INVALID;
	const char *name = cfg->other[0];
	if (name == NULL)
		return 0;
	size_t best = 3;
	for (const struct mg_option *o = mg_get_valid_options();
	     o != NULL && o->name != NULL; o++) {
		size_t d = cwm_edit_distance(name, o->name);
		if (d < best) {
			best = d;
			cwm_fmt(hint, sizeof(hint), "; did you mean '%s'?", o->name);
		}
	}
	cwm_fmt(errbuf, errlen,
	        "unknown option '%s': neither a CivetWeb option nor "
	        "<PREFIX>_<KEY>%s",
	        cwm_quote(name, q), hint);
	return MG_MQTT_ERR_CONFIG;
}

void mg_mqtt_config_free(struct mg_mqtt_config *cfg)
{
	if (cfg == NULL)
		return;
	cwm_conf_store_free(cfg->priv_);
	memset(cfg, 0, sizeof(*cfg));
}
