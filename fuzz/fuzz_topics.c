/*
 * Topic names, filters and matching: mg_mqtt_topic_valid,
 * mg_mqtt_filter_valid, mg_mqtt_topic_matches, cwm_utf8_valid /
 * cwm_utf8_text, the handler tree (cwm_tree_add / _match / _remove), and
 * the bridge's allow-list coverage cwm_filter_covers.
 *
 * Input: pieces separated by 0xff bytes; every piece is tried as a topic
 * and as a filter. Everything is compared with the reference
 * implementations of fuzz_common.h; any disagreement aborts.
 */
#include "../civetweb_mqtt.c"

#include "fuzz_common.h"

#define MAX_FILTERS 16
#define MAX_TOPICS 160

/* ---- the handler tree -------------------------------------------------- */

struct tree {
	struct cwm_tnode root;
	struct cwm_vec cur, nxt, out;
};

static void tree_free(struct tree *t)
{
	cwm_map_free(&t->root.kids, cwm_tnode_free);
	cwm_tnode_free(t->root.plus);
	cwm_tnode_free(t->root.hash);
	for (struct cwm_handler *h = t->root.handlers, *next; h != NULL;
	     h = next) {
		next = h->next;
		free(h);
	}
	free(t->cur.v);
	free(t->nxt.v);
	free(t->out.v);
	memset(t, 0, sizeof(*t));
}

/* The tree's answer for topic t must be exactly the live filters that
 * match it, by cwm_match and by the reference, in registration order. */
static void tree_check(struct tree *tr, char *const *filters, const int *live,
                       int nf, const char *t, size_t tn)
{
	CHECK(cwm_tree_match(&tr->root, t, tn, &tr->cur, &tr->nxt, &tr->out) ==
	      0);
	size_t j = 0;
	for (int i = 0; i < nf; i++) {
		if (!live[i])
			continue;
		const char *f = filters[i];
		size_t fn = strlen(f);
		int sl = cwm_share_len(f, fn);
		CHECK(sl >= 0);
		int lib = cwm_match(f + sl, t, tn);
		int ref = fz_match(f + sl, fn - (size_t)sl, t, tn);
		if (ref < 0)
			continue;
		CHECKF(lib == ref, "cwm_match('%s', '%s') = %d, reference %d", f, t,
		       lib, ref);
		if (!ref)
			continue;
		CHECKF(j < tr->out.n &&
		           ((struct cwm_handler *)tr->out.v[j])->seq == (unsigned)i + 1,
		       "tree: topic '%s' filter %d '%s' missing or out of order", t,
		       i + 1, f);
		j++;
	}
	CHECKF(j == tr->out.n, "tree: topic '%s' has %zu extra handlers", t,
	       tr->out.n - j);
}

static int fuzz_one(const uint8_t *data, size_t size)
{
	struct fz_pieces pc;
	char *filters[MAX_FILTERS], *topics[MAX_TOPICS];
	int nf = 0, nt = 0;
	char *owned[MAX_TOPICS];
	int nowned = 0;

	if (size > 65536 * 2)
		return 0;

	/* UTF-8 of the whole input, embedded NULs included. */
	CHECK(cwm_utf8_valid((const char *)data, size) ==
	      fz_utf8((const char *)data, size, FZ_UTF8_MQTT));
	CHECK(cwm_utf8_text((const char *)data, size) ==
	      fz_utf8((const char *)data, size, FZ_UTF8_TEXT));

	fz_split(data, size, &pc);
	for (int i = 0; i < pc.n; i++) {
		const char *s = pc.s[i];
		size_t n = strlen(s);

		/* Length-counted checks see embedded NULs and must refuse them. */
		int ctopic = cwm_topic_check(pc.s[i], pc.len[i]);
		CHECKF((ctopic == 0) == fz_topic_ok(pc.s[i], pc.len[i]),
		       "cwm_topic_check piece %d: %d", i, ctopic);
		int cfilter = cwm_filter_check(pc.s[i], pc.len[i]);
		int rf = fz_filter_ok(pc.s[i], pc.len[i]);
		if (rf >= 0)
			CHECKF((cfilter == 0) == rf, "cwm_filter_check piece %d: %d", i,
			       cfilter);

		/* The public API on the C string. */
		int tv = mg_mqtt_topic_valid(s);
		CHECK(tv == 0 || tv == MG_MQTT_ERR_TOPIC);
		CHECKF((tv == 0) == fz_topic_ok(s, n), "mg_mqtt_topic_valid('%s') = %d",
		       s, tv);
		int fv = mg_mqtt_filter_valid(s);
		CHECK(fv == 0 || fv == MG_MQTT_ERR_FILTER || fv == -26);
		if (fz_filter_ok(s, n) >= 0)
			CHECKF((fv == 0) == ref_filter_valid(s),
			       "mg_mqtt_filter_valid('%s') = %d", s, fv);
		/* Every topic name is a filter that matches itself, unless it
		 * looks like a share or holds named levels. */
		if (tv == 0 && fz_share(s, n) == 0 && strchr(s, '{') == NULL &&
		    strchr(s, '}') == NULL) {
			CHECKF(fv == 0, "topic '%s' is not a filter", s);
			CHECKF(mg_mqtt_topic_matches(s, s) == 1, "'%s' !~ itself", s);
		}
		int sl = cwm_share_len(s, n);
		long rs = fz_share(s, n);
		CHECKF(sl == (rs < 0 ? MG_MQTT_ERR_FILTER : rs),
		       "cwm_share_len('%s') = %d, reference %ld", s, sl, rs);

		if (tv == 0 && nt < MAX_TOPICS)
			topics[nt++] = pc.s[i];
		if (cwm_filter_check(s, n) == 0 && fz_filter_ok(s, n) == 1 &&
		    nf < MAX_FILTERS)
			filters[nf++] = pc.s[i];
	}

	/* mg_mqtt_topic_matches on every piece pair. */
	for (int i = 0; i < pc.n && i < 12; i++)
		for (int j = 0; j < pc.n && j < 12; j++) {
			int lib = mg_mqtt_topic_matches(pc.s[i], pc.s[j]);
			CHECK(lib == 0 || lib == 1);
			if (fz_filter_ok(pc.s[i], strlen(pc.s[i])) < 0)
				continue;
			CHECKF(lib == ref_topic_matches(pc.s[i], pc.s[j]),
			       "mg_mqtt_topic_matches('%s', '%s') = %d", pc.s[i],
			       pc.s[j], lib);
		}

	/* Topics each filter matches, from substitutions taken from the
	 * input's own levels and a few awkward ones. */
	const char *subst[12] = {"x", "", "$x", "y/z", "$"};
	int nsubst = 5;
	for (int i = 0; i < nt && nsubst < 12; i++) {
		size_t l = strcspn(topics[i], "/");
		char *lv = cwm_strndup(topics[i], l);
		owned[nowned++] = lv;
		subst[nsubst++] = lv;
	}
	for (int i = 0; i < nf && nt < MAX_TOPICS; i++) {
		const char *f = filters[i];
		f += cwm_share_len(f, strlen(f));
		char *d[8];
		int nd = fz_derive_topics(f, subst, nsubst, d, 8);
		for (int k = 0; k < nd; k++) {
			if (nt < MAX_TOPICS && nowned < MAX_TOPICS) {
				topics[nt++] = d[k];
				owned[nowned++] = d[k];
			} else {
				free(d[k]);
			}
		}
	}

	/* The handler tree: add all, match every topic; remove every other
	 * handler, match again; remove the rest: the tree must be empty. */
	struct tree tr;
	int live[MAX_FILTERS];
	memset(&tr, 0, sizeof(tr));
	for (int i = 0; i < nf; i++) {
		struct cwm_handler *h = calloc(1, sizeof(*h));
		CHECK(h != NULL);
		h->seq = (unsigned)i + 1;
		h->ud = (void *)(uintptr_t)(i + 1);
		CHECK(cwm_tree_add(&tr.root, filters[i], h) == 0);
		live[i] = 1;
	}
	for (int k = 0; k < nt; k++)
		tree_check(&tr, filters, live, nf, topics[k], strlen(topics[k]));
	for (int i = 1; i < nf; i += 2) {
		cwm_tree_remove(&tr.root, filters[i], (void *)(uintptr_t)(i + 1));
		live[i] = 0;
	}
	for (int k = 0; k < nt; k++)
		tree_check(&tr, filters, live, nf, topics[k], strlen(topics[k]));
	for (int i = 0; i < nf; i += 2) {
		cwm_tree_remove(&tr.root, filters[i], (void *)(uintptr_t)(i + 1));
		live[i] = 0;
	}
	CHECK(cwm_tnode_empty(&tr.root));
	tree_free(&tr);

	/* cwm_filter_covers(a, f): the bridge lets a browser subscribe to f
	 * when an allow filter a covers it. Sound: every topic f matches, a
	 * matches (literally: allow filters are compared level by level, a
	 * "$share/..." allow filter as its own levels). And f covers itself. */
	for (int i = 0; i < nf; i++) {
		const char *a = filters[i];
		for (int j = 0; j < nf; j++) {
			const char *f = filters[j];
			size_t an = strlen(a), fn = strlen(f);
			if (cwm_share_len(f, fn) != 0)
				continue; /* the bridge refuses those before */
			int cov = cwm_filter_covers(a, f);
			CHECK(cov == 0 || cov == 1);
			if (i == j)
				CHECKF(cov == 1, "'%s' does not cover itself", f);
			if (!cov)
				continue;
			for (int k = 0; k < nt; k++) {
				size_t tn = strlen(topics[k]);
				if (fz_match(f, fn, topics[k], tn) == 1)
					CHECKF(fz_match(a, an, topics[k], tn) == 1,
					       "covers('%s', '%s') but '%s' matches only the "
					       "second",
					       a, f, topics[k]);
			}
		}
	}

	for (int i = 0; i < nowned; i++)
		free(owned[i]);
	fz_pieces_free(&pc);
	return 0;
}

FZ_ENTRY(fuzz_one)
