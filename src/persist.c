/*
 * PERSISTENCE_DIR: QoS 1/2 messages kept in files until the broker
 * acknowledges them, and queued again at the next start.
 */
#include "internal.h"

/* ---- PERSISTENCE_DIR ---------------------------------------------------
 * Each accepted QoS 1/2 message is written to <dir>/<id>/<n>.msg, where
 * <id> is the client id with every byte outside [A-Za-z0-9_-] written as
 * %XX (so that no id is ".", "..", holds a '/' or shares a directory with
 * another) and <n> its number as 16 lower-case hex digits. It is written
 * to <n>.tmp, then renamed, so a crash never leaves half a file, before
 * publish() returns, and removed once the broker has acknowledged it. At
 * start the files left over are queued again, oldest first; only names of
 * exactly that form are touched. paho's own persistence is not used: paho
 * 1.3 drops restored in-flight messages when the broker answers "no
 * session", which is what a crashed broker answers.
 * Without PERSISTENCE_FSYNC the data is in the kernel's page cache when
 * publish() returns: it survives the process dying (crash, SIGKILL), not a
 * power cut or a kernel crash. With it, the file is fsync()ed before the
 * rename and the directory after it, so that a message publish() accepted
 * is on the disk (as far as the disk keeps its promises). */

static const char cwm_magic[4] = {'C', 'W', 'M', '1'};

static void cwm_persist_path(const struct mg_mqtt *c, uint64_t seq,
                             const char *ext, char out[PATH_MAX]);

/* fsync() of a directory, so that a rename or create in it is on disk. */
static int cwm_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

/* Writes r to a new file; sets r->pseq. Any thread, without c->lock. */
static int cwm_persist_write(struct mg_mqtt *c, struct cwm_out *r)
{
	struct cwm_wbuf b = {NULL, 0, 0, 0};
	const struct mg_mqtt_props *p = r->props;
	char path[PATH_MAX], tmp[PATH_MAX];
	uint64_t seq = atomic_fetch_add(&c->pseq_next, 1);

	cwm_wput(&b, cwm_magic, sizeof(cwm_magic));
	cwm_wput32(&b, (uint32_t)r->qos);
	cwm_wput32(&b, (uint32_t)r->retain);
	cwm_wputs(&b, r->topic, strlen(r->topic));
	cwm_wputs(&b, r->payload, r->len);
	cwm_wput32(&b, p != NULL ? (uint32_t)p->user_count : 0);
	for (size_t i = 0; p != NULL && i < p->user_count; i++) {
		cwm_wputs(&b, p->user[i].name, strlen(p->user[i].name));
		cwm_wputs(&b, p->user[i].value, strlen(p->user[i].value));
	}
	cwm_wput32(&b, p != NULL ? p->message_expiry : 0);
	cwm_wput32(&b, p != NULL ? (uint32_t)p->payload_utf8 : 0);
	const char *rt = p != NULL && p->response_topic ? p->response_topic : "";
	const char *ct = p != NULL && p->content_type ? p->content_type : "";
	cwm_wputs(&b, rt, strlen(rt));
	cwm_wputs(&b, ct, strlen(ct));
	cwm_wputs(&b, p != NULL && p->correlation_data ? p->correlation_data : "",
	          p != NULL && p->correlation_data ? p->correlation_len : 0);
	if (b.oom) {
		cwm_wreset(&b);
		return MG_MQTT_ERR_NOMEM;
	}
	cwm_persist_path(c, seq, ".msg", path);
	cwm_persist_path(c, seq, ".tmp", tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t done = 0;
	while (fd >= 0 && done < b.n) {
		ssize_t w = write(fd, b.p + done, b.n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		done += (size_t)w;
	}
	int ok = fd >= 0 && done == b.n;
	if (ok && c->cfg.persistence_fsync && fsync(fd) != 0)
		ok = 0;
	if (fd >= 0 && close(fd) != 0)
		ok = 0;
	int renamed = ok && rename(tmp, path) == 0;
	if (!renamed ||
	    (c->cfg.persistence_fsync && cwm_fsync_dir(c->pdir) != 0))
		ok = 0;
	cwm_wreset(&b);
	if (!ok) {
		int e = errno;
		unlink(renamed ? path : tmp); /* publish() fails: no file left */
		cwm_log(c, MG_MQTT_LOG_ERROR, "PERSISTENCE_DIR: cannot write %s: %s",
		        path, strerror(e));
		return MG_MQTT_ERR_IO;
	}
	r->pseq = seq;
	return 0;
}

static void cwm_persist_unlink(struct mg_mqtt *c, uint64_t seq)
{
	char path[PATH_MAX];
	cwm_persist_path(c, seq, ".msg", path);
	unlink(path);
}

/* [L] r is done: its file goes. Completions come on paho's threads, which
 * must not wait for the disk: the file is named for mqtt-io, which removes
 * it (cwm_persist_drain); out of memory, it is removed here. */
static void cwm_persist_remove(struct mg_mqtt *c, struct cwm_out *r)
{
	if (r->pseq == 0 || c->pdir == NULL)
		return;
	if (c->nunlinks == c->capunlinks) {
		size_t cap = c->capunlinks > 0 ? c->capunlinks * 2 : 64;
		uint64_t *v = realloc(c->unlinks, cap * sizeof(*v));
		if (v == NULL) {
			cwm_persist_unlink(c, r->pseq);
			r->pseq = 0;
			return;
		}
		c->unlinks = v;
		c->capunlinks = cap;
	}
	c->unlinks[c->nunlinks++] = r->pseq;
	r->pseq = 0;
	if (c->nunlinks == 1 && c->io_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->io_cond); /* later ones join this one */
}

/* [L] mqtt-io: removes the files of the messages done (released around
 * the disk). */
static void cwm_persist_drain(struct mg_mqtt *c)
{
	while (c->nunlinks > 0) {
		uint64_t batch[64];
		size_t n = c->nunlinks < 64 ? c->nunlinks : 64;
		c->nunlinks -= n;
		memcpy(batch, c->unlinks + c->nunlinks, n * sizeof(*batch));
		pthread_mutex_unlock(&c->lock);
		for (size_t i = 0; i < n; i++)
			cwm_persist_unlink(c, batch[i]);
		pthread_mutex_lock(&c->lock);
	}
}

struct cwm_rbuf {
	const unsigned char *p, *end;
	int bad;
};

static uint32_t cwm_rget32(struct cwm_rbuf *b)
{
	uint32_t v = 0;
	if (b->bad || b->end - b->p < 4) {
		b->bad = 1;
		return 0;
	}
	memcpy(&v, b->p, 4);
	b->p += 4;
	return v;
}

/* A length-prefixed field: pointer into the buffer, length in *n. */
static const char *cwm_rgets(struct cwm_rbuf *b, size_t *n)
{
	*n = cwm_rget32(b);
	if (b->bad || (size_t)(b->end - b->p) < *n) {
		b->bad = 1;
		*n = 0;
		return "";
	}
	const char *s = (const char *)b->p;
	b->p += *n;
	return s;
}

/* One publish record from a message file, or NULL if it is not one. */
static struct cwm_out *cwm_persist_parse(struct mg_mqtt *c,
                                         const unsigned char *data, size_t n)
{
	struct cwm_rbuf b = {data, data + n, 0};
	size_t tl, pl, rtl, ctl, cdl;
	struct mg_mqtt_props props;
	struct mg_mqtt_user_property user[64];

	memset(&props, 0, sizeof(props));
	if (n < 4 || memcmp(data, cwm_magic, 4) != 0)
		return NULL;
	b.p += 4;
	int qos = (int)cwm_rget32(&b), retain = (int)cwm_rget32(&b);
	const char *topic = cwm_rgets(&b, &tl);
	const char *payload = cwm_rgets(&b, &pl);
	uint32_t nuser = cwm_rget32(&b);
	if (nuser > 64)
		return NULL;
	/* Names and values are copied out NUL-terminated below. */
	char *strs[128] = {NULL};
	for (uint32_t i = 0; i < nuser && !b.bad; i++) {
		size_t kl, vl;
		const char *k = cwm_rgets(&b, &kl), *v = cwm_rgets(&b, &vl);
		strs[2 * i] = cwm_strndup(k, kl);
		strs[2 * i + 1] = cwm_strndup(v, vl);
		user[i].name = strs[2 * i] != NULL ? strs[2 * i] : "";
		user[i].value = strs[2 * i + 1] != NULL ? strs[2 * i + 1] : "";
	}
	props.user = nuser > 0 ? user : NULL;
	props.user_count = nuser;
	props.message_expiry = cwm_rget32(&b);
	props.payload_utf8 = (int)cwm_rget32(&b);
	const char *rt = cwm_rgets(&b, &rtl), *ct = cwm_rgets(&b, &ctl);
	const char *cd = cwm_rgets(&b, &cdl);
	char *rts = cwm_strndup(rt, rtl), *cts = cwm_strndup(ct, ctl);
	char *tops = cwm_strndup(topic, tl);
	props.response_topic = rtl > 0 ? rts : NULL;
	props.content_type = ctl > 0 ? cts : NULL;
	props.correlation_data = cdl > 0 ? cd : NULL;
	props.correlation_len = cdl;

	struct cwm_out *r = NULL;
	int rc;
	if (!b.bad && qos >= 1 && qos <= 2 && tops != NULL &&
	    cwm_topic_check(tops, tl) == 0 &&
	    (r = cwm_pub_new(c, tops, tl, payload, pl, qos, retain, &props,
	                     &rc)) != NULL)
		r->restored = 1;
	for (uint32_t i = 0; i < 2 * nuser; i++)
		free(strs[i]);
	free(rts);
	free(cts);
	free(tops);
	return r;
}

/* The client id as one file name: [A-Za-z0-9_-] as they are, every other
 * byte as %XX (upper-case hex). Distinct ids give distinct names, and
 * none is "." or "..", empty, or holds a '/'. Returns 0, or
 * MG_MQTT_ERR_TOO_LARGE when the name would be longer than NAME_MAX. */
static int cwm_persist_name(const char *id, char out[NAME_MAX + 1])
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;
	if (id[0] == '\0')
		return MG_MQTT_ERR_INVALID;
	for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++) {
		int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		            (*p >= '0' && *p <= '9') || *p == '_' || *p == '-';
		if (n + (plain ? 1 : 3) > NAME_MAX)
			return MG_MQTT_ERR_TOO_LARGE;
		if (plain) {
			out[n++] = (char)*p;
		} else {
			out[n++] = '%';
			out[n++] = hex[*p >> 4];
			out[n++] = hex[*p & 15];
		}
	}
	out[n] = '\0';
	return 0;
}

/* <dir>/<encoded client id> (made if missing) into c->pdir. */
static int cwm_persist_dir(struct mg_mqtt *c, char *err, size_t errlen)
{
	char path[PATH_MAX], name[NAME_MAX + 1], q[320];
	if (cwm_persist_name(c->client_id, name) != 0) {
		cwm_fmt(err, errlen,
		        "%s_PERSISTENCE_DIR: the client id is empty or too long for a "
		        "directory name (each byte outside A-Z a-z 0-9 _ - takes 3 of "
		        "its %d)",
		        c->prefix, NAME_MAX);
		return MG_MQTT_ERR_CONFIG;
	}
	cwm_fmt(path, sizeof(path), "%s/%s", c->cfg.persistence_dir, name);
	if (mkdir(path, 0700) != 0) {
		if (errno != EEXIST) {
			cwm_fmt(err, errlen, "%s_PERSISTENCE_DIR: cannot create '%s': %s",
			        c->prefix, cwm_quote_path(path, q), strerror(errno));
			return MG_MQTT_ERR_IO;
		}
	} else if (c->cfg.persistence_fsync) {
		cwm_fsync_dir(c->cfg.persistence_dir);
	}
	return (c->pdir = cwm_strdup(path)) == NULL ? MG_MQTT_ERR_NOMEM : 0;
}

/* A store file's name: exactly 16 lower-case hex digits (not all 0), then
 * ext. Returns its number, or 0 when name is not one. */
static uint64_t cwm_persist_seq(const char *name, const char *ext)
{
	uint64_t seq = 0;
	if (strlen(name) != 16 + strlen(ext) || strcmp(name + 16, ext) != 0)
		return 0;
	for (int i = 0; i < 16; i++) {
		char ch = name[i];
		int d = ch >= '0' && ch <= '9' ? ch - '0'
		        : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
		                                 : -1;
		if (d < 0)
			return 0;
		seq = seq << 4 | (uint64_t)d;
	}
	return seq;
}

/* <pdir>/<seq as 16 hex digits><ext>: the one way a store path is made. */
static void cwm_persist_path(const struct mg_mqtt *c, uint64_t seq,
                             const char *ext, char out[PATH_MAX])
{
	cwm_fmt(out, PATH_MAX, "%s/%016llx%s", c->pdir, (unsigned long long)seq,
	        ext);
}

static int cwm_seq_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The numbers of the message files in c->pdir, sorted (oldest first);
 * removes the temporary files of writes the last process did not finish.
 * Any other name is left alone. *seqs is malloc()ed (NULL when none). */
static int cwm_persist_list(struct mg_mqtt *c, uint64_t **seqs, size_t *count,
                            char *err, size_t errlen)
{
	char q[320], path[PATH_MAX];
	size_t cap = 0;
	struct dirent *e;
	DIR *d = opendir(c->pdir);
	*seqs = NULL;
	*count = 0;
	if (d == NULL) {
		cwm_fmt(err, errlen, "%s_PERSISTENCE_DIR: cannot read '%s': %s",
		        c->prefix, cwm_quote_path(c->pdir, q), strerror(errno));
		return MG_MQTT_ERR_IO;
	}
	/* readdir() returns NULL at the end and on an error (EOVERFLOW for
	 * a 64-bit inode number in a 32-bit build without large files, EIO):
	 * only errno tells them apart. An error is never an empty directory:
	 * numbering again from 1 would overwrite the files not seen. */
	for (errno = 0; (e = readdir(d)) != NULL; errno = 0) {
		uint64_t seq = cwm_persist_seq(e->d_name, ".tmp");
		if (seq != 0) {
			cwm_persist_path(c, seq, ".tmp", path);
			unlink(path);
			continue;
		}
		if ((seq = cwm_persist_seq(e->d_name, ".msg")) == 0)
			continue;
		if (*count == cap) {
			cap = cap * 2 + 16;
			uint64_t *ns = realloc(*seqs, cap * sizeof(uint64_t));
			if (ns == NULL) {
				errno = ENOMEM;
				break;
			}
			*seqs = ns;
		}
		(*seqs)[(*count)++] = seq;
	}
	int e_list = errno;
	closedir(d);
	if (e_list != 0) {
		cwm_fmt(err, errlen, "%s_PERSISTENCE_DIR: cannot list '%s': %s",
		        c->prefix, cwm_quote_path(c->pdir, q), strerror(e_list));
		free(*seqs);
		*seqs = NULL;
		*count = 0;
		return e_list == ENOMEM ? MG_MQTT_ERR_NOMEM : MG_MQTT_ERR_IO;
	}
	if (*count > 0)
		qsort(*seqs, *count, sizeof(uint64_t), cwm_seq_cmp);
	return 0;
}

/* One message file as a publish command, or NULL if it is not one. */
static struct cwm_out *cwm_persist_load(struct mg_mqtt *c, const char *file)
{
	FILE *f = fopen(file, "rb");
	unsigned char *data = NULL;
	struct cwm_out *r = NULL;
	size_t len;
	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	fseek(f, 0, SEEK_SET);
	if (sz > 0 && sz <= (long)CWM_MAX_PACKET + 65536 &&
	    (data = malloc((size_t)sz)) != NULL &&
	    (len = fread(data, 1, (size_t)sz, f)) == (size_t)sz)
		r = cwm_persist_parse(c, data, len);
	fclose(f);
	free(data);
	return r;
}

/* At start, before the threads: makes <dir>/<client id> and queues every
 * message left there, oldest first. Unreadable files are renamed *.bad. */
static int cwm_persist_open(struct mg_mqtt *c, char *err, size_t errlen)
{
	uint64_t *seqs;
	size_t count;
	uint64_t next = 1;
	int restored = 0, rc;

	if ((rc = cwm_persist_dir(c, err, errlen)) != 0 ||
	    (rc = cwm_persist_list(c, &seqs, &count, err, errlen)) != 0)
		return rc;
	for (size_t i = 0; i < count; i++) {
		char file[PATH_MAX], bad[PATH_MAX];
		uint64_t seq = seqs[i];
		cwm_persist_path(c, seq, ".msg", file);
		cwm_persist_path(c, seq, ".msg.bad", bad);
		struct cwm_out *r = cwm_persist_load(c, file);
		if (seq >= next && seq < UINT64_MAX)
			next = seq + 1;
		if (r == NULL) {
			rename(file, bad);
			cwm_log(c, MG_MQTT_LOG_WARNING,
			        "PERSISTENCE_DIR: %s is not a stored message; renamed to "
			        "*.bad",
			        file);
			continue;
		}
		r->pseq = seq;
		r->id = cwm_next_id(c);
		c->unfinished++;
		cwm_fifo_push(&c->outq, &c->outq_tail, r);
		restored++;
	}
	free(seqs);
	atomic_store(&c->pseq_next, next);
	if (restored > 0)
		cwm_log(c, MG_MQTT_LOG_INFO,
		        "PERSISTENCE_DIR: %d stored message(s) queued again", restored);
	return 0;
}
