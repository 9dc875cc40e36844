/* voice_table.c - the voice sessions: a slot each, bounded by
 * voice.max_sessions, and two indexes that find a session in O(1): by the
 * ssrc a datagram carries, and by the device id a message names.
 *
 * Both indexes are open-addressing tables of slot + 1 (0: empty) with linear
 * probing, sized to twice the sessions at most, so a probe is short; removal
 * shifts the entries after it back, so no tombstones pile up. A session's
 * ssrc is random and unique among live sessions: it is the only thing that
 * ties a datagram to its session (doc/VOICE.md: there is no MAC), so it must not
 * be guessable from the slot. */
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "supervisor/voice_impl.h"

static uint32_t ssrc_hash(uint32_t ssrc)
{
    return (uint32_t)(((uint64_t)ssrc * 0x9e3779b97f4a7c15ull) >> 32);
}

static uint32_t device_hash(const char *device)
{
    return (uint32_t)XXH3_64bits(device, strlen(device));
}

int voice_table_init(struct voice *v)
{
    uint32_t max = v->vc->max_sessions, size = 2;
    while (size < 2 * max)
        size <<= 1;
    v->nslots = max;
    v->index_mask = size - 1;
    v->slot = calloc(max, sizeof(*v->slot));
    v->free_list = calloc(max, sizeof(*v->free_list));
    v->by_ssrc = calloc(size, sizeof(*v->by_ssrc));
    v->by_device = calloc(size, sizeof(*v->by_device));
    if (!v->slot || !v->free_list || !v->by_ssrc || !v->by_device)
        return -1;
    for (uint32_t i = 0; i < max; i++)
        v->free_list[i] = max - 1 - i;
    v->free_top = max;
    return 0;
}

void voice_table_free(struct voice *v)
{
    for (uint32_t i = 0; v->slot && i < v->nslots; i++) {
        if (v->slot[i] && v->slot[i]->live)
            voice_session_free(v, v->slot[i]);
        free(v->slot[i]);
    }
    free(v->slot);
    free(v->free_list);
    free(v->by_ssrc);
    free(v->by_device);
}

/* ---- the indexes ---------------------------------------------------------- */

typedef bool index_match(const struct voice_session *s, const void *key);
typedef uint32_t index_hash(const struct voice_session *s);

static bool ssrc_is(const struct voice_session *s, const void *key)
{
    return s->ssrc == *(const uint32_t *)key;
}

static bool device_is(const struct voice_session *s, const void *key)
{
    return strcmp(s->device, key) == 0;
}

static uint32_t ssrc_home(const struct voice_session *s)
{
    return ssrc_hash(s->ssrc);
}

static uint32_t device_home(const struct voice_session *s)
{
    return device_hash(s->device);
}

static struct voice_session *index_find(const struct voice *v, const uint32_t *tab, uint32_t h,
                                        index_match *match, const void *key)
{
    for (uint32_t i = h & v->index_mask;; i = (i + 1) & v->index_mask) {
        if (!tab[i])
            return NULL;
        struct voice_session *s = v->slot[tab[i] - 1];
        if (match(s, key))
            return s;
    }
}

static void index_add(const struct voice *v, uint32_t *tab, uint32_t h, uint32_t slot)
{
    uint32_t i = h & v->index_mask;
    while (tab[i])
        i = (i + 1) & v->index_mask;
    tab[i] = slot + 1;
}

/* Remove SLOT, then move back each entry of the run after it that may no
 * longer be found past the hole. */
static void index_remove(const struct voice *v, uint32_t *tab, uint32_t h, uint32_t slot,
                         index_hash *home)
{
    uint32_t mask = v->index_mask, i = h & mask;
    while (tab[i] != slot + 1)
        i = (i + 1) & mask;
    tab[i] = 0;
    for (uint32_t j = (i + 1) & mask; tab[j]; j = (j + 1) & mask) {
        uint32_t k = home(v->slot[tab[j] - 1]) & mask;
        /* the entry at j stays if its home k lies cyclically in (i, j] */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
            continue;
        tab[i] = tab[j];
        tab[j] = 0;
        i = j;
    }
}

struct voice_session *voice_by_ssrc(const struct voice *v, uint32_t ssrc)
{
    return index_find(v, v->by_ssrc, ssrc_hash(ssrc), ssrc_is, &ssrc);
}

struct voice_session *voice_by_device(const struct voice *v, const char *device)
{
    return index_find(v, v->by_device, device_hash(device), device_is, device);
}

struct voice_session *voice_by_slot(const struct voice *v, uint32_t slot, uint32_t gen)
{
    struct voice_session *s = slot < v->nslots ? v->slot[slot] : NULL;
    return s && s->live && s->gen == gen ? s : NULL;
}

/* A job of SLOT's session came back from the pool: one fewer in flight. */
struct voice_session *voice_job_back(struct voice *v, uint32_t slot, uint32_t gen)
{
    struct voice_session *s = voice_by_slot(v, slot, gen);
    if (s)
        s->jobs--;
    return s;
}

void voice_job_describe(const struct voice *v, uint32_t slot, uint32_t gen, const char *device,
                        const char *what, char *buf, size_t len)
{
    const struct voice_session *s = voice_by_slot(v, slot, gen);
    if (s)
        snprintf(buf, len, "voice %s, device %.64s, session %s", what, s->device, s->id);
    else
        snprintf(buf, len, "voice %s, device %.64s, its session ended", what,
                 device ? device : "unknown");
}

/* ---- sessions ------------------------------------------------------------- */

/* A fresh key, a nonce whose header bytes a device copies into its packets
 * (type 1, flags 0) around an ssrc no live session has, and an id. */
static int new_secrets(struct voice *v, struct voice_session *s)
{
    uint8_t id[16];
    do {
        if (RAND_bytes(s->key, sizeof(s->key)) != 1 ||
            RAND_bytes(s->nonce, sizeof(s->nonce)) != 1 || RAND_bytes(id, sizeof(id)) != 1)
            return -1;
        s->nonce[0] = VOICE_TYPE;
        s->nonce[1] = 0;
        s->ssrc = voice_nonce_ssrc(s->nonce);
    } while (voice_by_ssrc(v, s->ssrc));
    voice_hex(id, sizeof(id), s->id);
    return voice_cipher_init(&s->cipher, s->key);
}

struct voice_session *voice_session_new(struct voice *v, const char *device)
{
    if (!v->free_top)
        return NULL;
    uint32_t slot = v->free_list[v->free_top - 1];
    struct voice_session *s = v->slot[slot];
    if (!s && !(s = v->slot[slot] = calloc(1, sizeof(*s))))
        return NULL;
    uint32_t gen = s->gen + 1;
    *s = (struct voice_session){.owner = v, .slot = slot, .gen = gen};
    snprintf(s->device, sizeof(s->device), "%s", device);
    if (new_secrets(v, s) < 0 || loop_timer_init(v->loop, &s->idle, voice_idle_fired, s) < 0 ||
        loop_timer_init(v->loop, &s->pace, voice_pace_fired, s) < 0) {
        voice_cipher_free(&s->cipher);
        loop_timer_fini(v->loop, &s->idle);
        return NULL;
    }
    v->free_top--;
    s->live = true;
    index_add(v, v->by_ssrc, ssrc_hash(s->ssrc), slot);
    index_add(v, v->by_device, device_hash(s->device), slot);
    return s;
}

void voice_session_free(struct voice *v, struct voice_session *s)
{
    index_remove(v, v->by_ssrc, ssrc_hash(s->ssrc), s->slot, ssrc_home);
    index_remove(v, v->by_device, device_hash(s->device), s->slot, device_home);
    loop_timer_fini(v->loop, &s->idle);
    loop_timer_fini(v->loop, &s->pace);
    voice_cipher_free(&s->cipher);
    voice_down_clear(s);
    free(s->pcm);
    free(s->utt);
    free(s->batch); /* not given to the pool: the daemon stops */
    free(s->seq);
    uint32_t slot = s->slot, gen = s->gen;
    *s = (struct voice_session){.owner = v, .slot = slot, .gen = gen};
    v->free_list[v->free_top++] = slot;
}
