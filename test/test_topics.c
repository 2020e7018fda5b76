/*
 * Topics without a broker: topic names and filters, matching, UTF-8, the
 * handler tree against a brute-force check, error texts and the hash map.
 */
#include "civetweb_mqtt.c" /* the build's generated file (-I) */

#include "harness.h"
#include "util.h"

#include <stdlib.h>

/* ---- topic names ------------------------------------------------------- */

TEST(topic_valid_accepts_names_without_wildcards)
{
	const char *good[] = {"a", "a/b", "/", "a//b", "//", "$SYS/x", " ",
	                      "a b/c:d", "\xc3\xbcn\xc3\xaf/\xc3\xa7o\xe2\x88\x82" "e",
	                      "\xf0\x9f\x98\x80", "$share", NULL};
	for (size_t i = 0; good[i] != NULL; i++)
		if (mg_mqtt_topic_valid(good[i]) != 0)
			th_fail(__FILE__, __LINE__, "'%s' refused", good[i]);
}

TEST(topic_valid_refuses_empty_null_and_wildcards)
{
	ASSERT_EQ(mg_mqtt_topic_valid(NULL), MG_MQTT_ERR_INVALID);
	const char *bad[] = {"", "+", "#", "a/+", "a/#", "a+", "a#b", "+/a",
	                     "a/b/#", NULL};
	for (size_t i = 0; bad[i] != NULL; i++)
		if (mg_mqtt_topic_valid(bad[i]) != MG_MQTT_ERR_TOPIC)
			th_fail(__FILE__, __LINE__, "'%s' accepted", bad[i]);
}

TEST(topic_valid_refuses_bad_utf8_and_control_characters)
{
	const char *bad[] = {
	    "a\xc0\xaf",          /* overlong '/' */
	    "\x80",               /* lone continuation byte */
	    "a\xed\xa0\x80",      /* surrogate U+D800 */
	    "\xed\xbf\xbf",       /* surrogate U+DFFF */
	    "\xf4\x90\x80\x80",   /* above U+10FFFF */
	    "a\xe2\x82",          /* truncated sequence */
	    "\xf8\x88\x80\x80\x80", /* five-byte form */
	    "\xff",
	    "a\x01",
	    "a\tb",
	    "line\n",
	    "del\x7f",
	    "c1\xc2\x85",         /* U+0085, a C1 control */
	    NULL};
	for (size_t i = 0; bad[i] != NULL; i++)
		if (mg_mqtt_topic_valid(bad[i]) != MG_MQTT_ERR_TOPIC)
			th_fail(__FILE__, __LINE__, "bad topic %zu accepted", i);
}

TEST(topic_of_65535_bytes_is_valid_and_65536_is_not)
{
	char *t = malloc(65537);
	ASSERT(t != NULL);
	memset(t, 'a', 65536);
	t[65535] = '\0';
	ASSERT_EQ(mg_mqtt_topic_valid(t), 0);
	t[65535] = 'a';
	t[65536] = '\0';
	ASSERT_EQ(mg_mqtt_topic_valid(t), MG_MQTT_ERR_TOPIC);
	/* The same bound for filters. */
	ASSERT_EQ(mg_mqtt_filter_valid(t), MG_MQTT_ERR_FILTER);
	t[65535] = '\0';
	ASSERT_EQ(mg_mqtt_filter_valid(t), 0);
	free(t);
}

/* ---- filters ----------------------------------------------------------- */

TEST(filter_valid_accepts_whole_level_wildcards_and_shares)
{
	const char *good[] = {"#",        "+",           "a/+/b",        "a/#",
	                      "+/+",      "+/#",         "/#",           "a//+",
	                      "$SYS/#",   "$share/g/a/#", "$share/g/#",  "$share/g/+",
	                      "$share/g//", "a/b",        "/",           "$share",
	                      "$share/g/$share/h/x", NULL};
	for (size_t i = 0; good[i] != NULL; i++)
		if (mg_mqtt_filter_valid(good[i]) != 0)
			th_fail(__FILE__, __LINE__, "'%s' refused", good[i]);
}

TEST(filter_valid_refuses_misplaced_wildcards_and_bad_shares)
{
	ASSERT_EQ(mg_mqtt_filter_valid(NULL), MG_MQTT_ERR_INVALID);
	const char *bad[] = {"a#",       "a/#/b",     "a+",        "+a/b",
	                     "a/b#",     "#/a",       "##",        "++",
	                     "a/+b",     "$share//a", "$share/g",  "$share/g/",
	                     "$share/g+/a", "$share/#/a", "$share/",  "",
	                     "$share/g/a#", "a\xc0\xaf", "a\x01/#",  NULL};
	for (size_t i = 0; bad[i] != NULL; i++)
		if (mg_mqtt_filter_valid(bad[i]) != MG_MQTT_ERR_FILTER)
			th_fail(__FILE__, __LINE__, "'%s' accepted", bad[i]);
}

/* ---- matching ---------------------------------------------------------- */

struct m {
	const char *filter, *topic;
	int want;
};

static const struct m matches[] = {
    {"a/b", "a/b", 1},
    {"a/b", "a/c", 0},
    {"a/b", "a/b/c", 0},
    {"a/b/c", "a/b", 0},
    {"a/+", "a/b", 1},
    {"a/+", "a", 0},
    {"a/+", "a/b/c", 0},
    {"a/+", "a/", 1}, /* an empty level is a level */
    {"a/+/c", "a//c", 1},
    {"a/+/c", "a/b/c", 1},
    {"a/+/c", "a/b/d", 0},
    {"+", "a", 1},
    {"+", "/a", 0},
    {"+/+", "/a", 1},
    {"/+", "/a", 1},
    {"+", "/", 0},
    {"a/#", "a", 1}, /* '#' includes the parent level */
    {"a/#", "a/b", 1},
    {"a/#", "a/b/c/d", 1},
    {"a/#", "ab", 0},
    {"a/#", "b/a", 0},
    {"a/b/#", "a", 0},
    {"a/+/#", "a/b", 1},
    {"#", "a", 1},
    {"#", "/", 1},
    {"#", "a/b/c", 1},
    {"#", "$SYS/x", 0},  /* leading wildcards skip '$' topics */
    {"#", "$SYS", 0},
    {"+/x", "$SYS/x", 0},
    {"+/#", "$SYS/x", 0},
    {"$SYS/#", "$SYS/x", 1},
    {"$SYS/#", "$SYS", 1},
    {"$SYS/+", "$SYS/x", 1},
    {"a/+", "a/$x", 1},  /* '$' only matters on the first level */
    {"a/#", "a/$x", 1},
    {"$share/g/a/+", "a/b", 1},
    {"$share/g/a/+", "a/b/c", 0},
    {"$share/g/#", "x", 1},
    {"$share/g/#", "$SYS/x", 0},
    {"$share/g/a", "$share/g/a", 0},
    {"A/b", "a/b", 0},   /* case matters */
    {"a/b", "a/b/", 0},
    {"a/b/", "a/b/", 1},
    /* Invalid filter or topic: no match. */
    {"a/#/b", "a/x/b", 0},
    {"a+", "a+", 0},
    {"a/b", "a/+", 0},
    {"#", "a/#", 0},
    {"#", "", 0},
    {"$share/g", "g", 0},
    {"#", "\xff", 0},
};

TEST(topic_matches_follows_mqtt_wildcard_rules)
{
	for (size_t i = 0; i < sizeof(matches) / sizeof(matches[0]); i++) {
		const struct m *c = &matches[i];
		if (mg_mqtt_topic_matches(c->filter, c->topic) != c->want)
			th_fail(__FILE__, __LINE__, "'%s' vs '%s': want %d", c->filter,
			        c->topic, c->want);
	}
	ASSERT_EQ(mg_mqtt_topic_matches(NULL, "a"), 0);
	ASSERT_EQ(mg_mqtt_topic_matches("a", NULL), 0);
	ASSERT_EQ(mg_mqtt_topic_matches(NULL, NULL), 0);
}

/* ---- UTF-8 and $share ------------------------------------------------- */

struct u8 {
	const char *s;
	size_t n;
	int want;
};

#define U8(lit, want) {lit, sizeof(lit) - 1, want}

static const struct u8 utf8_cases[] = {
    U8("", 1),
    U8("plain ascii ~", 1),
    U8("\x7e", 1),
    U8("\x7f", 0),             /* DEL */
    U8("\x1f", 0),
    U8("\0", 0),               /* U+0000 inside the length */
    U8("a\0b", 0),
    U8("\xc2\x80", 0),         /* U+0080, C1 control */
    U8("\xc2\x9f", 0),         /* U+009F, C1 control */
    U8("\xc2\xa0", 1),         /* U+00A0 */
    U8("\xdf\xbf", 1),         /* U+07FF */
    U8("\xc0\x80", 0),         /* overlong U+0000 */
    U8("\xc1\xbf", 0),         /* overlong */
    U8("\xe0\x9f\xbf", 0),     /* overlong U+07FF */
    U8("\xe0\xa0\x80", 1),     /* U+0800 */
    U8("\xed\x9f\xbf", 1),     /* U+D7FF */
    U8("\xed\xa0\x80", 0),     /* U+D800 */
    U8("\xed\xbf\xbf", 0),     /* U+DFFF */
    U8("\xee\x80\x80", 1),     /* U+E000 */
    U8("\xef\xbf\xbf", 0),     /* U+FFFF: a non-character */
    U8("\xef\xbf\xbe", 0),     /* U+FFFE */
    U8("\xef\xbf\xbd", 1),     /* U+FFFD */
    U8("\xef\xb7\x8f", 1),     /* U+FDCF */
    U8("\xef\xb7\x90", 0),     /* U+FDD0 */
    U8("\xef\xb7\xaf", 0),     /* U+FDEF */
    U8("\xef\xb7\xb0", 1),     /* U+FDF0 */
    U8("\xf0\x9f\xbf\xbe", 0), /* U+1FFFE */
    U8("\xf0\x9f\xbf\xbd", 1), /* U+1FFFD */
    U8("\xef\xbb\xbf", 1),     /* U+FEFF */
    U8("\xf0\x8f\xbf\xbf", 0), /* overlong U+FFFF */
    U8("\xf0\x90\x80\x80", 1), /* U+10000 */
    U8("\xf4\x8f\xbf\xbf", 0), /* U+10FFFF: a non-character */
    U8("\xf4\x8f\xbf\xbd", 1), /* U+10FFFD */
    U8("\xf4\x90\x80\x80", 0), /* U+110000 */
    U8("\xf5\x80\x80\x80", 0),
    U8("\xfe", 0),
    U8("\xff", 0),
    U8("\x80", 0),
    U8("\xbf", 0),
    U8("\xc3", 0),             /* truncated at the end */
    U8("\xe2\x82", 0),
    U8("\xf0\x9f\x98", 0),
    U8("\xc3\x28", 0),         /* bad continuation */
    U8("\xe2\x28\xa1", 0),
    U8("\xf0\x9f\x28\x80", 0),
    U8("\xe2\x82\xac", 1),     /* the euro sign */
};

/* ---- named levels: "home/{room}/temperature" ----------------------------- */

/* The value of name for topic under filter, as mg_mqtt_param gives it. */
static int param_of(const char *filter, const char *topic, const char *name,
                    char *buf, size_t len)
{
	char *plain;
	struct mg_mqtt_params *pp;
	ASSERT_EQ(cwm_filter_normalize(filter, &plain, &pp), 0);
	struct mg_mqtt_message m = {0};
	m.topic = topic;
	m.topic_len = strlen(topic);
	m.params = pp;
	int rc = mg_mqtt_param(&m, name, buf, len);
	free(plain);
	free(pp);
	return rc;
}

TEST(named_levels_match_like_plus_and_give_their_value_by_name)
{
	char v[64], *plain;
	ASSERT_EQ(mg_mqtt_filter_valid("home/{room}/temperature"), 0);
	ASSERT_EQ(mg_mqtt_filter_valid("{site}/{room}/#"), 0);
	ASSERT_EQ(mg_mqtt_filter_valid("$share/g/home/{room_2}/t"), 0);
	ASSERT(mg_mqtt_topic_matches("home/{room}/temperature",
	                             "home/kitchen/temperature"));
	ASSERT(!mg_mqtt_topic_matches("home/{room}/temperature",
	                              "home/kitchen/humidity"));
	ASSERT(!mg_mqtt_topic_matches("home/{room}/temperature",
	                              "home/a/b/temperature"));
	ASSERT_EQ(cwm_filter_normalize("$share/g/{a}/x/{b}/#", &plain, NULL), 0);
	ASSERT_STREQ(plain, "$share/g/+/x/+/#");
	free(plain);

	ASSERT_EQ(param_of("home/{room}/temperature", "home/kitchen/temperature",
	                   "room", v, sizeof(v)),
	          7);
	ASSERT_STREQ(v, "kitchen");
	ASSERT_EQ(param_of("{site}/{room}/#", "berlin/hall/a/b", "site", v,
	                   sizeof(v)),
	          6);
	ASSERT_STREQ(v, "berlin");
	ASSERT_EQ(param_of("{site}/{room}/#", "berlin/hall/a/b", "room", v,
	                   sizeof(v)),
	          4);
	ASSERT_STREQ(v, "hall");
	/* Levels count without the share prefix; an empty level is a value. */
	ASSERT_EQ(param_of("$share/g/x/{id}", "x/", "id", v, sizeof(v)), 0);
	ASSERT_STREQ(v, "");
	/* snprintf rules: the whole length, a truncated NUL-terminated copy. */
	ASSERT_EQ(param_of("a/{n}", "a/abcdefgh", "n", v, 4), 8);
	ASSERT_STREQ(v, "abc");
	ASSERT_EQ(param_of("a/{n}", "a/abcdefgh", "n", NULL, 0), 8);
	ASSERT_EQ(param_of("a/{n}", "a/x", "other", v, sizeof(v)),
	          MG_MQTT_ERR_NOT_FOUND);
	/* No names at all (the catch-all, a plain filter). */
	struct mg_mqtt_message m = {0};
	m.topic = "a/b";
	m.topic_len = 3;
	ASSERT_EQ(mg_mqtt_param(&m, "x", v, sizeof(v)), MG_MQTT_ERR_NOT_FOUND);
	ASSERT_EQ(mg_mqtt_param(NULL, "x", v, sizeof(v)), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_param(&m, NULL, v, sizeof(v)), MG_MQTT_ERR_INVALID);
}

static void never_called(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                         void *ud)
{
	(void)c, (void)m, (void)ud;
	abort();
}

TEST(bad_named_levels_are_refused_with_their_own_error)
{
	static const char *const bad[] = {
	    "home/{room}/{room}", /* a name used twice */
	    "home/x{room}",       /* braces inside a level with other text */
	    "home/{room}x",       "home/{}/t", "home/{a-b}/t", "home/{a b}/t",
	    "home/{/t",           "home/}/t", "home/{{a}}/t", "{a}{b}"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (mg_mqtt_filter_valid(bad[i]) != MG_MQTT_ERR_PARAM)
			th_fail(__FILE__, __LINE__, "'%s' gave %d", bad[i],
			        mg_mqtt_filter_valid(bad[i]));
		ASSERT(!mg_mqtt_topic_matches(bad[i], "home/x/t"));
	}
	/* Named, but not a filter once written '+'. */
	ASSERT_EQ(mg_mqtt_filter_valid("a/{n}/#/b"), MG_MQTT_ERR_FILTER);
	/* Registration and subscription say the same, before any broker. */
	struct mg_mqtt *c = mg_mqtt_create("NAMED");
	ASSERT(c != NULL);
	ASSERT_EQ(mg_mqtt_on_topic(c, "home/{room}/{room}", NULL, NULL),
	          MG_MQTT_ERR_INVALID); /* a NULL handler first */
	ASSERT_EQ(mg_mqtt_on_topic(c, "home/{room}/{room}",
	                           never_called, NULL),
	          MG_MQTT_ERR_PARAM);
	ASSERT_EQ(mg_mqtt_on_topic(c, "home/x{room}",
	                           never_called, NULL),
	          MG_MQTT_ERR_PARAM);
	ASSERT_EQ(mg_mqtt_on_topic(c, "home/{room}/t",
	                           never_called, NULL),
	          0);
	ASSERT_STREQ(mg_mqtt_strerror(MG_MQTT_ERR_PARAM),
	             "bad {name} level (a whole level, a name used once)");
	mg_mqtt_stop(c);
}

TEST(utf8_validation_edge_cases)
{
	for (size_t i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++)
		if (cwm_utf8_valid(utf8_cases[i].s, utf8_cases[i].n) !=
		    utf8_cases[i].want)
			th_fail(__FILE__, __LINE__, "case %zu: want %d", i,
			        utf8_cases[i].want);
	/* Only n bytes are looked at: a sequence cut by n is truncated. */
	ASSERT_EQ(cwm_utf8_valid("a\xe2\x82\xac", 3), 0);
	ASSERT_EQ(cwm_utf8_valid("a\xe2\x82\xac", 4), 1);
	ASSERT_EQ(cwm_utf8_valid("ab\x01", 2), 1);
}

TEST(share_len_measures_the_share_prefix)
{
	enum { BAD = MG_MQTT_ERR_FILTER }; /* malformed share */
	struct {
		const char *f;
		int want;
	} c[] = {{"$share/g/a", 9},    {"$share/group/a/#", 13},
	         {"$share/g/#", 9},    {"$share/g//", 9},
	         {"a", 0},             {"$share", 0},
	         {"$shar/g/a", 0},     {"$sharex/g/a", 0},
	         {"$SHARE/g/a", 0},    {"share/g/a", 0},
	         {"$share/", BAD},      {"$share/g", BAD},
	         {"$share//a", BAD},    {"$share/g/", BAD},
	         {"$share/g+/a", BAD},  {"$share/#/a", BAD},
	         {"$share/a#b/c", BAD}};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
		if (cwm_share_len(c[i].f, strlen(c[i].f)) != c[i].want)
			th_fail(__FILE__, __LINE__, "'%s': %d, want %d", c[i].f,
			        cwm_share_len(c[i].f, strlen(c[i].f)), c[i].want);
	/* Only n bytes count. */
	ASSERT_EQ(cwm_share_len("$share/g/a", 8), BAD);
	ASSERT_EQ(cwm_share_len("$share/g/a", 9), BAD);
	ASSERT_EQ(cwm_share_len("$share/g/a", 10), 9);
	ASSERT_EQ(cwm_share_len("$share/g/a", 3), 0);
}

/* ---- the handler tree -------------------------------------------------- */

struct tree {
	struct cwm_tnode root;
	struct cwm_vec cur, nxt, out;
	unsigned seq;
};

static void tree_add(struct tree *t, const char *filter)
{
	struct cwm_handler *h = calloc(1, sizeof(*h));
	ASSERT(h != NULL);
	ASSERT_EQ(cwm_filter_check(filter, strlen(filter)), 0);
	h->seq = ++t->seq;
	ASSERT_EQ(cwm_tree_add(&t->root, filter, h), 0);
}

/* Matches topic; returns the seqs as "1,4,7" in buf (sorted as found). */
static const char *tree_hits(struct tree *t, const char *topic, char *buf,
                             size_t len)
{
	size_t n = 0;
	ASSERT_EQ(cwm_tree_match(&t->root, topic, strlen(topic), &t->cur, &t->nxt,
	                         &t->out),
	          0);
	buf[0] = '\0';
	for (size_t i = 0; i < t->out.n; i++) {
		const struct cwm_handler *h = t->out.v[i];
		n += (size_t)snprintf(buf + n, len - n, "%s%u", i > 0 ? "," : "",
		                      h->seq);
		ASSERT_LT(n, len);
	}
	return buf;
}

/* Frees the tree the way mg_mqtt_stop() does for a client's. */
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

/* Adds filters (the first is handler 1, the next 2, ...), then checks
 * each pair of hits: a topic and the handlers it matches, in order ("1,4";
 * "" for none). Both lists end with NULL. */
static void tree_expect(struct tree *t, const char *const *filters,
                        const char *const *hits)
{
	char buf[256];
	for (size_t i = 0; filters[i] != NULL; i++)
		tree_add(t, filters[i]);
	for (size_t i = 0; hits[i] != NULL; i += 2)
		if (strcmp(tree_hits(t, hits[i], buf, sizeof(buf)), hits[i + 1]) != 0)
			th_fail(__FILE__, __LINE__, "'%s' matched %s, not %s", hits[i], buf,
			        hits[i + 1]);
}

/* tree_expect on a new tree, freed after. */
static void tree_check(const char *const *filters, const char *const *hits)
{
	struct tree t = {0};
	tree_expect(&t, filters, hits);
	tree_free(&t);
}

TEST(tree_matches_each_handler_once_in_registration_order)
{
	static const char *const filters[] = {
	    "home/#",
	    "home/+/temp",
	    "home/kitchen/temp",
	    "#",
	    "+/kitchen/+",
	    "home/kitchen/temp", /* 6: the same filter again */
	    "home/+/#",
	    "office",
	    "home/kitchen/temp/#", /* 9: '#' matches its parent */
	    NULL};
	static const char *const hits[] = {
	    "home/kitchen/temp",     "1,2,3,4,5,6,7,9",
	    "home/garden",           "1,4,7",
	    "home",                  "1,4",
	    "office",                "4,8",
	    "office/desk",           "4",
	    "x/kitchen/y",           "4,5",
	    "home/kitchen/temp/x/y", "1,4,7,9",
	    NULL};
	tree_check(filters, hits);
}

TEST(tree_hash_child_matches_its_parent_level)
{
	static const char *const filters[] = {"a/#", "a/b/#", "+/#", "a/+/#", NULL};
	static const char *const hits[] = {"a",   "1,3",   "a/b", "1,2,3,4",
	                                   "a/c", "1,3,4", "b",   "3",
	                                   "a/",  "1,3,4", NULL};
	tree_check(filters, hits);
}

TEST(tree_skips_dollar_topics_for_leading_wildcards)
{
	static const char *const filters[] = {"#",   "+/x",      "$SYS/#", "$SYS/+",
	                                      "+/#", "$SYS/x/#", NULL};
	/* '$' deeper down is an ordinary character (a/$x). */
	static const char *const hits[] = {"$SYS/x", "3,4,6", "$SYS", "3",
	                                   "a/x",    "1,2,5", "a/$x", "1,5",
	                                   NULL};
	tree_check(filters, hits);
}

TEST(tree_stores_share_filters_as_the_plain_filter)
{
	static const char *const filters[] = {"$share/g1/a/+", "a/b", "$share/g2/#",
	                                      NULL};
	static const char *const hits[] = {"a/b", "1,2,3", "$share/g1/a/b", "",
	                                   NULL};
	struct tree t = {0};
	tree_expect(&t, filters, hits);
	/* Stored under "a", not under "$share". */
	ASSERT(cwm_map_get(&t.root.kids, "$share", 6) == NULL);
	ASSERT(cwm_map_get(&t.root.kids, "a", 1) != NULL);
	ASSERT(t.root.hash != NULL);
	tree_free(&t);
}

TEST(tree_handles_empty_levels)
{
	static const char *const filters[] = {"a//c", "a/+/c", "/",
	                                      "+/+",  "/#",    NULL};
	static const char *const hits[] = {"a//c", "1,2", "a/b/c", "2",
	                                   "/",    "3,4,5", "/x",  "4,5",
	                                   "x",    "",      NULL};
	tree_check(filters, hits);
}

TEST(empty_tree_matches_nothing)
{
	static const char *const none[] = {NULL};
	static const char *const hits[] = {"a/b", "", "$SYS", "", NULL};
	tree_check(none, hits);
}

/* Deterministic xorshift32: the same tree and topics on every run. */
static uint32_t rnd(uint32_t *s)
{
	uint32_t x = *s;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *s = x;
}

static const char *const levels[] = {"a", "b", "c", "dd", "", "e1"};
#define NLEVELS (sizeof(levels) / sizeof(levels[0]))

/* A random filter: exact levels, '+', a final '#', sometimes a share
 * prefix or a leading "$SYS". It may be invalid ("", "$share/g0/"). */
static void random_filter1(uint32_t *s, char *buf, size_t len)
{
	size_t n = 0;
	int depth = 1 + (int)(rnd(s) % 5);
	if (rnd(s) % 20 == 0)
		n += (size_t)snprintf(buf + n, len - n, "$share/g%u/", rnd(s) % 3);
	for (int d = 0; d < depth; d++) {
		uint32_t r = rnd(s) % 10;
		const char *lv;
		if (d == 0 && r == 0)
			lv = "$SYS";
		else if (r < 3)
			lv = "+";
		else if (r == 3 && d == depth - 1)
			lv = "#";
		else
			lv = levels[rnd(s) % NLEVELS];
		n += (size_t)snprintf(buf + n, len - n, "%s%s", d > 0 ? "/" : "", lv);
	}
}

static void random_filter(uint32_t *s, char *buf, size_t len)
{
	do
		random_filter1(s, buf, len);
	while (cwm_filter_check(buf, strlen(buf)) != 0);
}

static void random_topic(uint32_t *s, char *buf, size_t len)
{
	size_t n = 0;
	int depth = 1 + (int)(rnd(s) % 6);
	for (int d = 0; d < depth; d++) {
		const char *lv = d == 0 && rnd(s) % 10 == 0
		                     ? "$SYS"
		                     : levels[rnd(s) % NLEVELS];
		n += (size_t)snprintf(buf + n, len - n, "%s%s", d > 0 ? "/" : "", lv);
	}
	if (n == 0) /* a lone empty level is no topic */
		snprintf(buf, len, "a");
}

TEST_T(tree_with_ten_thousand_handlers_agrees_with_brute_force, 20)
{
	enum { HANDLERS = 10000, TOPICS = 400 };
	struct tree t = {0};
	char (*filters)[96] = calloc(HANDLERS, sizeof(*filters));
	uint32_t seed = 0x2545f491u, total = 0, wild_dollar = 0;
	ASSERT(filters != NULL);
	for (int i = 0; i < HANDLERS; i++) {
		random_filter(&seed, filters[i], sizeof(filters[i]));
		tree_add(&t, filters[i]);
	}
	for (int k = 0; k < TOPICS; k++) {
		char topic[96];
		random_topic(&seed, topic, sizeof(topic));
		size_t tn = strlen(topic);
		ASSERT_EQ(cwm_topic_check(topic, tn), 0);
		ASSERT_EQ(cwm_tree_match(&t.root, topic, tn, &t.cur, &t.nxt, &t.out),
		          0);
		size_t j = 0;
		for (int i = 0; i < HANDLERS; i++) {
			const char *f = filters[i];
			f += cwm_share_len(f, strlen(f));
			if (!cwm_match(f, topic, tn))
				continue;
			/* The tree gives the same handlers, in seq order. */
			if (j >= t.out.n ||
			    ((struct cwm_handler *)t.out.v[j])->seq != (unsigned)i + 1)
				th_fail(__FILE__, __LINE__,
				        "topic '%s': filter %d '%s' missing or out of order",
				        topic, i + 1, filters[i]);
			ASSERT_EQ(mg_mqtt_topic_matches(filters[i], topic), 1);
			j++;
		}
		if (j != t.out.n)
			th_fail(__FILE__, __LINE__, "topic '%s': tree has %zu extra",
			        topic, t.out.n - j);
		total += (uint32_t)j;
		wild_dollar += topic[0] == '$';
	}
	/* The random data exercised something. */
	ASSERT_GT(total, TOPICS);
	ASSERT_GT(wild_dollar, 5);
	free(filters);
	tree_free(&t);
}

/* ---- error texts ------------------------------------------------------- */

struct errtext {
	int code;
	const char *text;
};

TEST(strerror_gives_the_text_of_every_code)
{
#define XX(name, value, text) {value, text},
	static const struct errtext all[] = {MG_MQTT_ERRNO_MAP(XX)};
#undef XX
	size_t n = sizeof(all) / sizeof(all[0]);
	ASSERT_EQ(n, 27);
	for (size_t i = 0; i < n; i++) {
		ASSERT_LT(all[i].code, 0);
		ASSERT_STREQ(mg_mqtt_strerror(all[i].code), all[i].text);
		for (size_t j = 0; j < i; j++)
			ASSERT_NE(all[i].code, all[j].code);
	}
	ASSERT_EQ(MG_MQTT_ERR_INVALID, -1);
	ASSERT_EQ(MG_MQTT_ERR_NOT_FOUND, -25);
	ASSERT_STREQ(mg_mqtt_strerror(MG_MQTT_ERR_CONFIG), "bad configuration");
	ASSERT_STREQ(mg_mqtt_strerror(0), "success");
	ASSERT_STREQ(mg_mqtt_strerror(MG_MQTT_OK), "success");
	const int unknown[] = {1, 2, 100, -28, -999, INT_MIN, INT_MAX};
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
		ASSERT_STREQ(mg_mqtt_strerror(unknown[i]), "unknown error");
}

/* ---- the hash map ------------------------------------------------------ */

static int freed_vals;

static void count_free(void *v)
{
	(void)v;
	freed_vals++;
}

TEST(map_puts_gets_replaces_and_deletes_many_keys)
{
	enum { N = 5000 };
	struct cwm_map m = {0};
	char k[32];
	ASSERT(cwm_map_get(&m, "x", 1) == NULL);
	ASSERT(cwm_map_del(&m, "x", 1) == NULL);
	for (intptr_t i = 0; i < N; i++) {
		int kl = snprintf(k, sizeof(k), "key-%ld", (long)i);
		ASSERT_EQ(cwm_map_put(&m, k, (size_t)kl, (void *)(i + 1)), 0);
	}
	ASSERT_EQ(m.n, N);
	ASSERT_GE(m.nb, N); /* grew */
	ASSERT_EQ(m.nb & (m.nb - 1), 0);
	for (intptr_t i = 0; i < N; i++) {
		int kl = snprintf(k, sizeof(k), "key-%ld", (long)i);
		ASSERT_EQ((intptr_t)cwm_map_get(&m, k, (size_t)kl), i + 1);
	}
	/* Replace the even ones: the count stays. */
	for (intptr_t i = 0; i < N; i += 2) {
		int kl = snprintf(k, sizeof(k), "key-%ld", (long)i);
		ASSERT_EQ(cwm_map_put(&m, k, (size_t)kl, (void *)(i + 100000)), 0);
	}
	ASSERT_EQ(m.n, N);
	/* Delete every third. */
	size_t left = N;
	for (intptr_t i = 0; i < N; i += 3) {
		int kl = snprintf(k, sizeof(k), "key-%ld", (long)i);
		intptr_t want = i % 2 == 0 ? i + 100000 : i + 1;
		ASSERT_EQ((intptr_t)cwm_map_del(&m, k, (size_t)kl), want);
		ASSERT(cwm_map_del(&m, k, (size_t)kl) == NULL);
		left--;
	}
	ASSERT_EQ(m.n, left);
	for (intptr_t i = 0; i < N; i++) {
		int kl = snprintf(k, sizeof(k), "key-%ld", (long)i);
		intptr_t got = (intptr_t)cwm_map_get(&m, k, (size_t)kl);
		intptr_t want = i % 3 == 0 ? 0 : i % 2 == 0 ? i + 100000 : i + 1;
		ASSERT_EQ(got, want);
	}
	/* Deleted keys can come back. */
	ASSERT_EQ(cwm_map_put(&m, "key-0", 5, (void *)7), 0);
	ASSERT_EQ((intptr_t)cwm_map_get(&m, "key-0", 5), 7);
	freed_vals = 0;
	cwm_map_free(&m, count_free);
	ASSERT_EQ(freed_vals, (int)left + 1);
	ASSERT(m.b == NULL && m.n == 0 && m.nb == 0);
	/* A freed map is empty and usable again. */
	ASSERT(cwm_map_get(&m, "key-1", 5) == NULL);
	ASSERT_EQ(cwm_map_put(&m, "k", 1, (void *)1), 0);
	cwm_map_free(&m, NULL);
}

TEST(map_keys_are_bytes_of_a_length_not_prefixes)
{
	struct cwm_map m = {0};
	const char *keys[] = {"a", "ab", "abc", "abcd", "b", "ba", ""};
	for (intptr_t i = 0; i < 7; i++)
		ASSERT_EQ(cwm_map_put(&m, keys[i], strlen(keys[i]), (void *)(i + 1)),
		          0);
	for (intptr_t i = 0; i < 7; i++)
		ASSERT_EQ((intptr_t)cwm_map_get(&m, keys[i], strlen(keys[i])), i + 1);
	/* A key is the first klen bytes, whatever follows. */
	ASSERT_EQ((intptr_t)cwm_map_get(&m, "abcdef", 2), 2);
	ASSERT_EQ((intptr_t)cwm_map_get(&m, "a/b", 1), 1);
	ASSERT_EQ((intptr_t)cwm_map_get(&m, "xyz", 0), 7);
	ASSERT(cwm_map_get(&m, "abcde", 5) == NULL);
	/* Embedded NUL bytes are part of a key. */
	ASSERT_EQ(cwm_map_put(&m, "a\0b", 3, (void *)99), 0);
	ASSERT_EQ((intptr_t)cwm_map_get(&m, "a\0b", 3), 99);
	ASSERT_EQ((intptr_t)cwm_map_get(&m, "a", 1), 1);
	/* Deleting one leaves its prefixes and extensions. */
	ASSERT_EQ((intptr_t)cwm_map_del(&m, "ab", 2), 2);
	ASSERT_EQ((intptr_t)cwm_map_get(&m, "a", 1), 1);
	ASSERT_EQ((intptr_t)cwm_map_get(&m, "abc", 3), 3);
	ASSERT(cwm_map_get(&m, "ab", 2) == NULL);
	ASSERT_EQ(m.n, 7);
	cwm_map_free(&m, NULL);
}

/* ---- found by fuzz/fuzz_bridge_json (regressions) ----------------------- */

/* "base64-after-padding": cwm_unbase64 stops at the first '=' when more
 * text follows it, so "QQ==QUJD" decodes as "A" instead of being refused
 * (a bridge "payload" with "base64":true, "correlation_data"). */
TEST(unbase64_refuses_text_after_the_padding)
{
	size_t n = 0;
	unsigned char *d;
	const char *good[][2] = {{"QUJD", "ABC"}, {"QQ==", "A"}, {"QQ", "A"},
	                         {"QUI=", "AB"}};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		d = cwm_unbase64(good[i][0], &n);
		ASSERT(d != NULL);
		ASSERT_EQ(n, strlen(good[i][1]));
		ASSERT(memcmp(d, good[i][1], n) == 0);
		free(d);
	}
	const char *bad[] = {"QQ==QUJD", "QUI=QQ", "QQ=A", "QQ==Q"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		d = cwm_unbase64(bad[i], &n);
		if (d != NULL) {
			free(d);
			th_fail(__FILE__, __LINE__, "'%s' decoded (%zu bytes)", bad[i], n);
		}
	}
}

/* "digest-param-in-quoted-value": cwm_digest_param finds a parameter name
 * inside another parameter's quoted value ("realm=" in a user name), and
 * returns what follows it there instead of the parameter itself. */
TEST(digest_param_skips_names_inside_quoted_values)
{
	char out[256];
	const char *h = "Digest username=\"x realm=\\\"evil\\\"\", "
	                "realm=\"example.com\", nonce=\"1-2\", uri=\"/mqtt\"";
	ASSERT_EQ(cwm_digest_param(h, "username", out, sizeof(out)), 0);
	ASSERT_STREQ(out, "x realm=\"evil\"");
	ASSERT_EQ(cwm_digest_param(h, "realm", out, sizeof(out)), 0);
	ASSERT_STREQ(out, "example.com");
	const char *h2 = "Digest username=\"a, nonce=zz\", nonce=\"1-2\"";
	ASSERT_EQ(cwm_digest_param(h2, "nonce", out, sizeof(out)), 0);
	ASSERT_STREQ(out, "1-2");
}

/* "json-nul-truncation": a JSON string with \u0000 becomes a C string cut
 * at the NUL; cwm_bridge_publish_json (POST <path>/publish and the
 * WebSocket "publish" op) then publishes to "demo/a" for the topic
 * "demo/a\u0000/x", and "ab" for the payload "ab\u0000cd". Required: such
 * a field is refused (400), or for the payload published whole. The
 * bridge's parser (cwm_json_parse) now refuses \u0000 before cJSON sees it. The
 * client is a fake, as in the fuzz target: created, never started, marked
 * disconnected so that publish queues; static, as a started one is
 * reachable. */
static struct mg_mqtt *nul_client;

TEST(bridge_json_never_publishes_a_field_cut_at_a_nul)
{
	static struct cwm_settings s;
	static struct cwm_bridge br;
	char err[256];
	const char *opts[] = {"MQTT_BRIDGE_PATH", "/mqtt",
	                      "MQTT_BRIDGE_PUBLISH_ALLOW", "demo/#", NULL};
	ASSERT_EQ(cwm_settings_read(&s, "MQTT", opts, err, sizeof(err)), 0);
	nul_client = mg_mqtt_create("MQTT");
	ASSERT(nul_client != NULL);
	nul_client->cfg = s;
	nul_client->v5 = 1;
	nul_client->state = CWM_DISCONNECTED;
	atomic_store(&nul_client->ops_ok, 1);
	br.c = nul_client;
	const char *bodies[] = {
	    "{\"topic\":\"demo/a\\u0000/x\",\"payload\":\"p\"}",
	    "{\"topic\":\"demo/a\",\"payload\":\"ab\\u0000cd\"}",
	    "{\"topic\":\"demo/a\",\"payload\":\"p\",\"properties\":"
	    "{\"content_type\":\"t\\u0000x\"}}",
	    "{\"topic\":\"demo/a\",\"payload\":\"p\",\"properties\":"
	    "{\"user\":{\"k\":\"v\\u0000w\"}}}",
	};
	/* A clean body is published: the fake works. */
	cJSON *req = cJSON_Parse("{\"topic\":\"demo/a\",\"payload\":\"p\"}");
	const char *e = NULL;
	ASSERT_GT(cwm_bridge_publish_json(&br, req, &e), 0);
	cJSON_Delete(req);
	int cut = 0;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		/* Parsed as the bridge parses: refused there, or published whole. */
		req = cwm_json_parse(bodies[i], strlen(bodies[i]), 32, &e);
		if (req == NULL) {
			ASSERT_CONTAINS(e, "\\u0000 (NUL)");
			continue;
		}
		e = NULL;
		int id = cwm_bridge_publish_json(&br, req, &e);
		cJSON_Delete(req);
		if (id <= 0) {
			ASSERT_EQ(cwm_http_status(id), 400);
			continue;
		}
		const struct cwm_out *r = nul_client->outq_tail;
		ASSERT(r != NULL && r->id == id);
		if (i == 1 && r->len == 5 && memcmp(r->payload, "ab\0cd", 5) == 0)
			continue; /* the payload whole is fine too */
		fprintf(stderr, "  published with a field cut at the NUL: %s "
		                "(topic '%s', %zu payload bytes)\n",
		        bodies[i], r->topic, r->len);
		cut++;
	}
	/* A raw NUL byte inside a string of the body (POST <path>/publish
	 * parses the body by its length) is cut the same way. */
	static const char raw[] = "{\"topic\":\"demo/a\0b\",\"payload\":\"p\"}";
	req = cwm_json_parse(raw, sizeof(raw) - 1, 32, &e);
	if (req == NULL)
		ASSERT_CONTAINS(e, "\\u0000 (NUL)");
	if (req != NULL) {
		int id = cwm_bridge_publish_json(&br, req, &e);
		cJSON_Delete(req);
		if (id > 0) {
			fprintf(stderr, "  published with a raw NUL in the topic: to '%s'\n",
			        nul_client->outq_tail->topic);
			cut++;
		}
	}
	ASSERT_EQ(cut, 0);
}

/* Heap use after free in cwm_bridge_deliver (fuzz_bridge_json, 120 s run;
 * minimized: a browser subscribed to "demo/x/state" and "demo/+/state").
 * A browser holds two filters that both match a topic, and its queue
 * (BRIDGE_CLIENT_QUEUE) is full: the first match drops it
 * (cwm_bclient_push -> cwm_bclient_drop -> cwm_bclient_unsubscribe_all),
 * which frees both of its handlers in the bridge's tree, and the loop
 * over b->hits then reads the second one (->ud) and writes bc->stamp
 * through it. In the server: mqtt-dispatch, a slow browser with
 * overlapping subscriptions. ASan reports it at once; in a plain build
 * the freed bytes stay as they were unless they are overwritten, so this
 * test makes glibc overwrite them: M_PERTURB fills freed chunks (fastbin
 * path), and the tcache bin of the handler's size is filled first so that
 * the handlers' free() takes that path. */
#include <malloc.h>

static struct mg_mqtt *uaf_client;
static struct cwm_anchor uaf_anchor;
static struct cwm_bridge uaf_br;

TEST(bridge_drops_a_full_browser_with_overlapping_filters_safely)
{
	static struct cwm_settings s;
	char err[256];
	const char *opts[] = {"MQTT_BRIDGE_PATH", "/mqtt",
	                      "MQTT_BRIDGE_SUBSCRIBE_ALLOW", "demo/#",
	                      "MQTT_BRIDGE_CLIENT_QUEUE", "2", NULL};
	ASSERT_EQ(cwm_settings_read(&s, "MQTT", opts, err, sizeof(err)), 0);
	uaf_client = mg_mqtt_create("MQTT");
	ASSERT(uaf_client != NULL);
	uaf_client->cfg = s;
	uaf_client->state = CWM_DISCONNECTED;
	atomic_store(&uaf_client->ops_ok, 1);
	pthread_mutex_init(&uaf_anchor.lock, NULL);
	pthread_cond_init(&uaf_anchor.idle, NULL);
	snprintf(uaf_anchor.prefix, sizeof(uaf_anchor.prefix), "MQTT");
	uaf_br.c = uaf_client;
	uaf_br.a = &uaf_anchor;
	uaf_br.path = "/mqtt";
	uaf_br.plen = strlen(uaf_br.path);
	pthread_cond_init(&uaf_br.wcond, NULL);
	pthread_cond_init(&uaf_br.idle, NULL);
	atomic_store(&uaf_anchor.bridge, &uaf_br);

	pthread_mutex_lock(&uaf_anchor.lock);
	struct cwm_bclient *bc = cwm_bclient_new(&uaf_br, NULL, BC_SSE);
	pthread_mutex_unlock(&uaf_anchor.lock);
	ASSERT(bc != NULL);
	char f1[] = "demo/x/state", f2[] = "demo/+/state";
	const char *e = NULL;
	ASSERT_EQ(cwm_bridge_subscribe(&uaf_br, bc, f1, 0, &e), 0);
	ASSERT_EQ(cwm_bridge_subscribe(&uaf_br, bc, f2, 0, &e), 0);

	struct mg_mqtt_message m;
	struct mg_mqtt_props props; /* dispatch always passes them */
	memset(&m, 0, sizeof(m));
	memset(&props, 0, sizeof(props));
	m.props = &props;
	m.topic = "demo/x/state";
	m.topic_len = strlen(m.topic);
	m.payload = "v";
	m.payload_len = 1;
	/* Two fit the queue; the third drops the browser. */
	cwm_bridge_deliver(&uaf_br, &m);
	cwm_bridge_deliver(&uaf_br, &m);
	ASSERT_EQ(bc->qlen, 2);
	mallopt(M_PERTURB, 0x5a);
	void *fill[16];
	for (int i = 0; i < 16; i++)
		fill[i] = malloc(sizeof(struct cwm_handler));
	for (int i = 0; i < 16; i++)
		free(fill[i]);
	cwm_bridge_deliver(&uaf_br, &m);
	mallopt(M_PERTURB, 0);
	ASSERT(bc->dead);
	ASSERT_EQ(bc->qlen, 0);
	ASSERT(cwm_tnode_empty(&uaf_br.tree));

	pthread_mutex_lock(&uaf_anchor.lock);
	cwm_bclient_remove(&uaf_br, bc);
	pthread_mutex_unlock(&uaf_anchor.lock);
	cwm_bclient_free(bc);
}

/* A filter's depth is the caller's choice (a browser's, an application's):
 * adding, removing and freeing take no stack per level. Run on a thread
 * with a 128 KiB stack, about a CivetWeb worker's: 32,767 levels (the
 * longest valid filter) overflowed it when removal and freeing recursed
 * once a level. */
enum { DEEP_LEVELS = 32767 };

static void *deep_tree_main(void *arg)
{
	char *f = arg, buf[64];
	struct tree t = {0};
	int ud1, ud2;
	tree_add(&t, f);    /* 1 */
	tree_add(&t, "a/b"); /* 2 */
	struct cwm_tnode *deep = &t.root;
	while (deep->plus != NULL)
		deep = deep->plus;
	ASSERT(deep->hash != NULL);
	deep->hash->handlers->ud = &ud1;
	cwm_tree_remove(&t.root, f, &ud2); /* not there: nothing goes */
	ASSERT(t.root.plus != NULL);
	/* Removal prunes every level it emptied, and keeps the rest. */
	cwm_tree_remove(&t.root, f, &ud1);
	ASSERT(t.root.plus == NULL);
	ASSERT_STREQ(tree_hits(&t, "a/b", buf, sizeof(buf)), "2");
	tree_add(&t, f); /* freeing a tree that holds it */
	tree_free(&t);
	return NULL;
}

TEST(tree_of_the_deepest_filter_is_removed_and_freed_without_recursion)
{
	char *f = malloc(2 * DEEP_LEVELS + 1);
	ASSERT(f != NULL);
	for (int i = 0; i < DEEP_LEVELS; i++)
		memcpy(f + 2 * i, i + 1 < DEEP_LEVELS ? "+/" : "#", 2);
	f[2 * DEEP_LEVELS - 1] = '\0';
	ASSERT_EQ(strlen(f), 65533);
	pthread_attr_t a;
	pthread_t th;
	ASSERT_EQ(pthread_attr_init(&a), 0);
	ASSERT_EQ(pthread_attr_setstacksize(&a, 128 * 1024), 0);
	ASSERT_EQ(pthread_create(&th, &a, deep_tree_main, f), 0);
	ASSERT_EQ(pthread_join(th, NULL), 0);
	pthread_attr_destroy(&a);
	free(f);
}

TEST(levels_count_slashes_and_max_topic_levels_refuses_more)
{
	ASSERT_EQ(cwm_levels("a", 1), 1);
	ASSERT_EQ(cwm_levels("/", 1), 2);
	ASSERT_EQ(cwm_levels("a//b/", 5), 4);
	struct mg_mqtt c;
	memset(&c, 0, sizeof(c));
	c.cfg.max_topic_levels = 3;
	ASSERT_EQ(cwm_levels_check(&c, "a/b/c", 0), 0);
	ASSERT_EQ(cwm_levels_check(&c, "a/b/c/d", 0), MG_MQTT_ERR_TOPIC);
	ASSERT_EQ(cwm_levels_check(&c, "a/+/#", 1), 0);
	ASSERT_EQ(cwm_levels_check(&c, "a/+/+/#", 1), MG_MQTT_ERR_FILTER);
	/* $share/<group>/ is not a level of the filter. */
	ASSERT_EQ(cwm_levels_check(&c, "$share/g/a/b/c", 1), 0);
	ASSERT_EQ(cwm_levels_check(&c, "$share/g/a/b/c/d", 1), MG_MQTT_ERR_FILTER);
}
