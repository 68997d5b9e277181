/* socket_index.c - a string-keyed hash table of pointer sets: which local connections follow a
 * conversation, and which belong to a user. Chained buckets, doubling at load 1. */
#include <stdlib.h>
#include <string.h>

#include "socket.h"

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    socket_set set;
    char key[];
} entry;

struct socket_index {
    entry **buckets;
    size_t nbuckets, nkeys;
};

static uint64_t hash_of(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

socket_index *socket_index_create(void)
{
    socket_index *ix = calloc(1, sizeof(*ix));

    if (ix && (ix->buckets = calloc(64, sizeof(entry *))) == NULL) {
        free(ix);
        return NULL;
    }
    if (ix)
        ix->nbuckets = 64;
    return ix;
}

void socket_index_destroy(socket_index *ix)
{
    if (ix == NULL)
        return;
    for (size_t i = 0; i < ix->nbuckets; i++)
        for (entry *e = ix->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e->set.items);
            free(e);
        }
    free(ix->buckets);
    free(ix);
}

static entry **find(const socket_index *ix, const char *key, uint64_t h)
{
    entry **pe = &ix->buckets[h & (ix->nbuckets - 1)];

    for (; *pe; pe = &(*pe)->next)
        if ((*pe)->hash == h && strcmp((*pe)->key, key) == 0)
            break;
    return pe;
}

static void grow(socket_index *ix)
{
    size_t n = ix->nbuckets * 2;
    entry **b = calloc(n, sizeof(entry *));

    if (b == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < ix->nbuckets; i++)
        for (entry *e = ix->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    free(ix->buckets);
    ix->buckets = b;
    ix->nbuckets = n;
}

cm_err socket_index_add(socket_index *ix, const char *key, void *p)
{
    uint64_t h = hash_of(key);
    entry **pe = find(ix, key, h), *e = *pe;

    if (e == NULL) {
        size_t len = strlen(key);
        if ((e = calloc(1, sizeof(*e) + len + 1)) == NULL)
            return CM_ENOMEM;
        memcpy(e->key, key, len + 1);
        e->hash = h;
        *pe = e;
        if (++ix->nkeys > ix->nbuckets)
            grow(ix);
    }
    for (size_t i = 0; i < e->set.n; i++)
        if (e->set.items[i] == p)
            return CM_OK;
    if (e->set.n == e->set.cap) {
        size_t cap = e->set.cap ? e->set.cap * 2 : 4;
        void **items = realloc(e->set.items, cap * sizeof(void *));
        if (items == NULL)
            return CM_ENOMEM;
        e->set.items = items;
        e->set.cap = cap;
    }
    e->set.items[e->set.n++] = p;
    return CM_OK;
}

void socket_index_remove(socket_index *ix, const char *key, void *p)
{
    entry **pe = find(ix, key, hash_of(key)), *e = *pe;

    if (e == NULL)
        return;
    for (size_t i = 0; i < e->set.n; i++)
        if (e->set.items[i] == p) {
            /* Order inside a set does not matter: delivery order is per connection. */
            e->set.items[i] = e->set.items[--e->set.n];
            break;
        }
    if (e->set.n == 0) {
        *pe = e->next;
        free(e->set.items);
        free(e);
        ix->nkeys--;
    }
}

const socket_set *socket_index_get(const socket_index *ix, const char *key)
{
    entry *e = *find(ix, key, hash_of(key));

    return e ? &e->set : NULL;
}

size_t socket_index_keys(const socket_index *ix)
{
    return ix->nkeys;
}
