/*
 * docs/configuration.md against the code: its one table of options
 * ("## Every option") must list every key of the library's key table
 * (cwm_keys in src/config.c), once, with the code's default, and no key the
 * code does not have.
 *
 * A row is "| `KEY` | default | meaning |". The default cell starts with
 * the default in backticks (`60`) when the code has one; when the code has
 * none (NULL) the cell starts with words ("none", "generated (...)").
 */
#include "civetweb_mqtt.c" /* the build's generated file (-I) */

#include "harness.h"
#include "util.h"

#include <stdlib.h>

/* One row of the options table. */
struct doc_row {
	char key[64];
	char def[128]; /* the leading `literal` of the default cell; "" if none */
	int has_def;
	int line;
};

struct doc_table {
	struct doc_row rows[256];
	size_t n;
};

/* The page, found from this file's path (the Makefile compiles
 * test/test_docs.c from the top; CMake gives an absolute path). */
static char *read_config_page(void)
{
	char path[1024];
	const char *file = __FILE__;
	const char *slash = strrchr(file, '/');
	int dir = slash != NULL ? (int)(slash - file) : 0;
	snprintf(path, sizeof(path), "%.*s%sdocs/configuration.md", dir, file,
	         dir > 0 ? "/../" : "../");
	char *text = th_read_file(path, NULL);
	if (text[0] == '\0')
		th_fail(__FILE__, __LINE__, "cannot read %s", path);
	return text;
}

/* Copies the text between the first pair of backticks at s into out
 * (returns 1), or returns 0 when s does not start with a backtick. */
static int backticked(const char *s, char *out, size_t len)
{
	if (*s != '`')
		return 0;
	const char *end = strchr(s + 1, '`');
	if (end == NULL || (size_t)(end - s - 1) >= len)
		return 0;
	memcpy(out, s + 1, (size_t)(end - s - 1));
	out[end - s - 1] = '\0';
	return 1;
}

/* The rows of the table under "## Every option". */
static void read_table(struct doc_table *t)
{
	char *text = read_config_page(), *next;
	int in_section = 0, lineno = 0;
	t->n = 0;
	for (char *line = text; line != NULL; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		lineno++;
		if (strncmp(line, "## ", 3) == 0)
			in_section = strcmp(line, "## Every option") == 0;
		if (!in_section || strncmp(line, "| `", 3) != 0)
			continue;
		struct doc_row *r = &t->rows[t->n];
		ASSERT(t->n < sizeof(t->rows) / sizeof(t->rows[0]));
		ASSERT(backticked(line + 2, r->key, sizeof(r->key)));
		const char *cell = strstr(line + 3, " | ");
		ASSERT(cell != NULL);
		r->has_def = backticked(cell + 3, r->def, sizeof(r->def));
		if (!r->has_def)
			r->def[0] = '\0';
		r->line = lineno;
		t->n++;
	}
	free(text);
	if (t->n == 0)
		th_fail(__FILE__, __LINE__,
		        "no option rows under \"## Every option\" in "
		        "docs/configuration.md");
}

static const struct doc_row *find_row(const struct doc_table *t,
                                      const char *key)
{
	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->rows[i].key, key) == 0)
			return &t->rows[i];
	return NULL;
}

TEST(every_option_of_the_code_is_in_the_options_table)
{
	static struct doc_table t;
	int missing = 0;
	read_table(&t);
	for (size_t i = 0; i < CWM_NKEYS; i++)
		if (find_row(&t, cwm_keys[i].name) == NULL) {
			fprintf(stderr, "    docs/configuration.md: no row for %s\n",
			        cwm_keys[i].name);
			missing++;
		}
	ASSERT_EQ(missing, 0);
}

TEST(every_documented_default_is_the_code_default)
{
	static struct doc_table t;
	int wrong = 0;
	read_table(&t);
	for (size_t i = 0; i < CWM_NKEYS; i++) {
		const struct cwm_key *k = &cwm_keys[i];
		const struct doc_row *r = find_row(&t, k->name);
		if (r == NULL)
			continue; /* the test above reports it */
		if (k->def == NULL && r->has_def) {
			fprintf(stderr,
			        "    docs/configuration.md:%d: %s documents the default "
			        "`%s`; the code has none\n",
			        r->line, k->name, r->def);
			wrong++;
		} else if (k->def != NULL &&
		           (!r->has_def || strcmp(r->def, k->def) != 0)) {
			fprintf(stderr,
			        "    docs/configuration.md:%d: %s documents the default "
			        "%s%s%s; the code's is `%s`\n",
			        r->line, k->name, r->has_def ? "`" : "",
			        r->has_def ? r->def : "(none)", r->has_def ? "`" : "",
			        k->def);
			wrong++;
		}
	}
	ASSERT_EQ(wrong, 0);
}

TEST(the_options_table_lists_each_option_once_and_no_other)
{
	static struct doc_table t;
	int wrong = 0;
	read_table(&t);
	for (size_t i = 0; i < t.n; i++) {
		if (cwm_key_find(t.rows[i].key, strlen(t.rows[i].key)) == NULL ||
		    strcmp(cwm_key_find(t.rows[i].key, strlen(t.rows[i].key))->name,
		           t.rows[i].key) != 0) {
			fprintf(stderr,
			        "    docs/configuration.md:%d: %s is no option of the "
			        "code\n",
			        t.rows[i].line, t.rows[i].key);
			wrong++;
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(t.rows[j].key, t.rows[i].key) == 0) {
				fprintf(stderr,
				        "    docs/configuration.md:%d: %s again (first on "
				        "line %d)\n",
				        t.rows[i].line, t.rows[i].key, t.rows[j].line);
				wrong++;
			}
	}
	ASSERT_EQ(wrong, 0);
}
