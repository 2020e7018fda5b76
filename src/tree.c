/*
 * The handler tree: topic filters by level, so that matching a topic costs
 * O(levels x matching branches), not O(handlers). Used for the client's
 * topic handlers and for the bridge's browser subscriptions.
 */
#include "internal.h"

static void cwm_handler_free(struct cwm_handler *h)
{
	if (h != NULL) {
		free(h->params);
		free(h);
	}
}

/* Frees a node's handlers. */
static void cwm_tnode_free_handlers(struct cwm_tnode *t)
{
	for (struct cwm_handler *h = t->handlers, *next; h != NULL; h = next) {
		next = h->next;
		cwm_handler_free(h);
	}
}

/* Puts t on the free list *list (linked by fnext); NULL is fine. */
static void cwm_tnode_push(struct cwm_tnode **list, struct cwm_tnode *t)
{
	if (t != NULL) {
		t->fnext = *list;
		*list = t;
	}
}

/* Frees the subtree of p without recursion: a tree is as deep as its
 * longest filter, which a browser chooses (a 2,000-level filter
 * overflowed a CivetWeb worker's stack), so each node goes through a
 * free list linked inside the nodes themselves (no allocation). */
static void cwm_tnode_free(void *p)
{
	struct cwm_tnode *list = NULL;
	cwm_tnode_push(&list, p);
	while (list != NULL) {
		struct cwm_tnode *t = list;
		list = t->fnext;
		for (size_t i = 0; i < t->kids.nb; i++)
			for (struct cwm_map_ent *e = t->kids.b[i]; e != NULL; e = e->next)
				cwm_tnode_push(&list, e->val);
		cwm_tnode_push(&list, t->plus);
		cwm_tnode_push(&list, t->hash);
		cwm_map_free(&t->kids, NULL);
		cwm_tnode_free_handlers(t);
		free(t);
	}
}

/* The child of t for the filter level f (l bytes): the "+" or "#" child
 * (*slot then points at its pointer) or the one in kids (*slot NULL). */
static struct cwm_tnode *cwm_tnode_kid(struct cwm_tnode *t, const char *f,
                                       size_t l, struct cwm_tnode ***slot)
{
	*slot = NULL;
	if (l == 1 && f[0] == '+')
		*slot = &t->plus;
	else if (l == 1 && f[0] == '#')
		*slot = &t->hash;
	return *slot != NULL ? **slot : cwm_map_get(&t->kids, f, l);
}

/* Frees what root (a tree's node embedded in its owner) holds, and
 * leaves it empty. */
static void cwm_tree_clear(struct cwm_tnode *root)
{
	cwm_map_free(&root->kids, cwm_tnode_free);
	cwm_tnode_free(root->plus);
	cwm_tnode_free(root->hash);
	cwm_tnode_free_handlers(root);
	memset(root, 0, sizeof(*root));
}

/* Adds h under the valid filter f. Returns 0 or MG_MQTT_ERR_NOMEM (the tree
 * may keep empty nodes then, which match nothing). */
static int cwm_tree_add(struct cwm_tnode *root, const char *f,
                        struct cwm_handler *h)
{
	struct cwm_tnode *t = root;
	f += cwm_share_len(f, strlen(f));
	for (;;) {
		size_t l = strcspn(f, "/");
		struct cwm_tnode **slot, *kid = cwm_tnode_kid(t, f, l, &slot);
		if (kid == NULL) {
			if ((kid = calloc(1, sizeof(*kid))) == NULL)
				return MG_MQTT_ERR_NOMEM;
			kid->up = t;
			if (slot != NULL) {
				*slot = kid;
			} else if (cwm_map_put(&t->kids, f, l, kid) != 0) {
				free(kid);
				return MG_MQTT_ERR_NOMEM;
			}
		}
		t = kid;
		if (f[l] == '\0')
			break;
		f += l + 1;
	}
	if (t->last != NULL)
		t->last->next = h;
	else
		t->handlers = h;
	t->last = h;
	return 0;
}

#if MG_MQTT_ENABLE_BRIDGE /* removal: only browser subscriptions go */
static int cwm_tnode_empty(const struct cwm_tnode *t)
{
	return t->kids.n == 0 && t->plus == NULL && t->hash == NULL &&
	       t->handlers == NULL;
}

/* Removes the handler with user data ud from node t. */
static void cwm_tnode_remove_handler(struct cwm_tnode *t, void *ud)
{
	struct cwm_handler **pp = &t->handlers, *prev = NULL;
	for (; *pp != NULL; prev = *pp, pp = &(*pp)->next)
		if ((*pp)->ud == ud) {
			struct cwm_handler *h = *pp;
			*pp = h->next;
			if (t->last == h)
				t->last = prev;
			cwm_handler_free(h);
			return;
		}
}

/* Removes the handler with user data ud under the filter f (without
 * $share/<group>/), then frees the nodes it leaves empty, from the
 * deepest up. No recursion (see cwm_tnode_free): down by the levels of
 * f, up by each node's parent, the level that names a node found again
 * by scanning f backwards. */
static void cwm_tree_remove_at(struct cwm_tnode *root, const char *f, void *ud)
{
	struct cwm_tnode *t = root, **slot;
	for (const char *lv = f;;) {
		size_t l = strcspn(lv, "/");
		if ((t = cwm_tnode_kid(t, lv, l, &slot)) == NULL)
			return;
		if (lv[l] == '\0')
			break;
		lv += l + 1;
	}
	cwm_tnode_remove_handler(t, ud);
	const char *end = f + strlen(f); /* the end of t's level */
	while (t != root && cwm_tnode_empty(t)) {
		const char *start = end;
		while (start > f && start[-1] != '/')
			start--;
		struct cwm_tnode *up = t->up;
		cwm_tnode_kid(up, start, (size_t)(end - start), &slot);
		if (slot != NULL)
			*slot = NULL;
		else
			cwm_map_del(&up->kids, start, (size_t)(end - start));
		cwm_tnode_free(t); /* empty: nothing below it but its map's buckets */
		t = up;
		end = start > f ? start - 1 : f;
	}
}

/* The bridge's subscriptions come and go: removal prunes the tree. */
static void cwm_tree_remove(struct cwm_tnode *root, const char *f, void *ud)
{
	cwm_tree_remove_at(root, f + cwm_share_len(f, strlen(f)), ud);
}
#endif

static int cwm_push_handlers(struct cwm_vec *out, const struct cwm_tnode *t)
{
	for (struct cwm_handler *h = t->handlers; h != NULL; h = h->next)
		if (cwm_vec_push(out, h) != 0)
			return MG_MQTT_ERR_NOMEM;
	return 0;
}

/* Collects into out the handlers whose filter matches topic t (n bytes),
 * in registration order. cur and nxt are scratch vectors. */
static int cwm_tree_match(const struct cwm_tnode *root, const char *t, size_t n,
                          struct cwm_vec *cur, struct cwm_vec *nxt,
                          struct cwm_vec *out)
{
	const char *end = t + n;
	int dollar = n > 0 && t[0] == '$';
	out->n = cur->n = 0;
	if (cwm_vec_push(cur, (void *)root) != 0)
		return MG_MQTT_ERR_NOMEM;
	for (int depth = 0; cur->n > 0; depth++) {
		const char *e = memchr(t, '/', (size_t)(end - t));
		size_t l = e != NULL ? (size_t)(e - t) : (size_t)(end - t);
		int wild = !(depth == 0 && dollar);
		nxt->n = 0;
		for (size_t i = 0; i < cur->n; i++) {
			const struct cwm_tnode *node = cur->v[i], *kid;
			if (node->hash != NULL && wild &&
			    cwm_push_handlers(out, node->hash) != 0)
				return MG_MQTT_ERR_NOMEM;
			if ((kid = cwm_map_get(&node->kids, t, l)) != NULL &&
			    cwm_vec_push(nxt, (void *)kid) != 0)
				return MG_MQTT_ERR_NOMEM;
			if (node->plus != NULL && wild &&
			    cwm_vec_push(nxt, node->plus) != 0)
				return MG_MQTT_ERR_NOMEM;
		}
		struct cwm_vec tmp = *cur;
		*cur = *nxt;
		*nxt = tmp;
		if (e == NULL)
			break;
		t = e + 1;
	}
	for (size_t i = 0; i < cur->n; i++) {
		const struct cwm_tnode *node = cur->v[i];
		if (cwm_push_handlers(out, node) != 0 ||
		    (node->hash != NULL && cwm_push_handlers(out, node->hash) != 0))
			return MG_MQTT_ERR_NOMEM;
	}
	/* Registration order; few matches, so insertion sort. */
	for (size_t i = 1; i < out->n; i++) {
		void *h = out->v[i];
		size_t j = i;
		for (; j > 0 && ((struct cwm_handler *)out->v[j - 1])->seq >
		                    ((struct cwm_handler *)h)->seq;
		     j--)
			out->v[j] = out->v[j - 1];
		out->v[j] = h;
	}
	return 0;
}
