/* test_ring.c - unit tests of the shared-memory SPSC ring (shm/ring.h):
 * order, full and empty, the 32-bit index wrap, indices a wild peer wrote,
 * reset, futex parking, and a two-process stress that checks every entry
 * arrives exactly once, in order, intact. */
#include "shm/ring.h"
#include "test/t.h"

#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>

/* --- helpers --- */

struct small {
    uint64_t seq;
    uint64_t check;
};

static struct small small_item(uint64_t seq)
{
    return (struct small){seq, ~seq * 0x9E3779B97F4A7C15u};
}

/* Private memory of exactly the ring's size, so AddressSanitizer would see
 * any access past the last entry. */
static void *ring_mem(uint32_t cap, uint32_t esize)
{
    size_t size = ring_shm_size(cap, esize);
    T_REQUIRE(size % RING_CACHELINE == 0, "test geometry keeps the size a multiple of 64");
    void *mem = aligned_alloc(RING_CACHELINE, size);
    T_REQUIRE(mem != NULL, "aligned_alloc(%zu)", size);
    memset(mem, 0xA5, size);
    ring_reset(mem);
    return mem;
}

/* Memory both sides of a fork() see. */
static void *shared_mem(size_t size)
{
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    T_REQUIRE(mem != MAP_FAILED, "mmap %zu shared bytes", size);
    return mem;
}

static void set_indices(void *mem, uint32_t head, uint32_t tail)
{
    struct ring_shm *shm = mem;
    atomic_store(&shm->head, head);
    atomic_store(&shm->tail, tail);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* Push N consecutive small items from *NEXT; false at the first refusal. */
static bool push_seq(struct ring *p, uint64_t *next, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++, (*next)++) {
        struct small it = small_item(*next);
        if (!ring_push(p, &it))
            return false;
    }
    return true;
}

/* Pop until empty, checking each is the expected next item; returns count. */
static uint32_t pop_seq(struct ring *c, uint64_t *expect)
{
    uint32_t n = 0;
    struct small it;
    int rc;
    while ((rc = ring_pop(c, &it)) == 1) {
        struct small want = small_item(*expect);
        T_CHECK(it.seq == want.seq && it.check == want.check, "got %llu, expected %llu",
                (unsigned long long)it.seq, (unsigned long long)want.seq);
        (*expect)++;
        n++;
    }
    T_CHECK(rc == 0, "pop ended with %d, not empty", rc);
    return n;
}

/* --- single-process tests --- */

static void test_basic(void)
{
    void *mem = ring_mem(8, sizeof(struct small));
    struct ring p, c;
    ring_attach(&p, mem, 8, sizeof(struct small), true);
    ring_attach(&c, mem, 8, sizeof(struct small), false);

    struct small it;
    T_CHECK(ring_pop(&c, &it) == 0, "new ring is empty");
    T_CHECK(!ring_has_data(&c), "nothing waiting");
    uint64_t next = 0, expect = 0;
    T_CHECK(push_seq(&p, &next, 3), "three pushes");
    T_CHECK(ring_used(&p) == 3, "used %u", ring_used(&p));
    T_CHECK(ring_has_data(&c), "data waiting");
    T_CHECK(pop_seq(&c, &expect) == 3, "three pops");
    T_CHECK(ring_used(&p) == 0, "used %u after draining", ring_used(&p));
    T_CHECK(!ring_has_data(&c), "drained");
    free(mem);
}

static void test_full(void)
{
    void *mem = ring_mem(8, sizeof(struct small));
    struct ring p, c;
    ring_attach(&p, mem, 8, sizeof(struct small), true);
    ring_attach(&c, mem, 8, sizeof(struct small), false);

    uint64_t next = 0, expect = 0;
    T_CHECK(push_seq(&p, &next, 8), "fills to capacity");
    struct small extra = small_item(99);
    T_CHECK(!ring_push(&p, &extra), "push refused at capacity");
    T_CHECK(ring_used(&p) == 8, "used %u", ring_used(&p));

    struct small it;
    T_CHECK(ring_pop(&c, &it) == 1 && it.seq == 0, "first out is first in");
    expect = 1;
    T_CHECK(push_seq(&p, &next, 1), "one slot free again");
    T_CHECK(!ring_push(&p, &extra), "full again");
    T_CHECK(pop_seq(&c, &expect) == 8, "eight left, in order");
    free(mem);
}

/* Free-running indices pass UINT32_MAX -> 0 while entries are in flight. */
static void test_wraparound(void)
{
    const uint32_t cap = 8;
    void *mem = ring_mem(cap, sizeof(struct small));
    set_indices(mem, UINT32_MAX - 5, UINT32_MAX - 5);
    struct ring p, c;
    ring_attach(&p, mem, cap, sizeof(struct small), true);
    ring_attach(&c, mem, cap, sizeof(struct small), false);

    uint64_t next = 0, expect = 0;
    T_CHECK(push_seq(&p, &next, cap), "fills across the wrap");
    T_CHECK(ring_used(&p) == cap, "used %u across the wrap", ring_used(&p));
    struct small extra = small_item(99);
    T_CHECK(!ring_push(&p, &extra), "full across the wrap");
    T_CHECK(pop_seq(&c, &expect) == cap, "drains across the wrap");

    for (uint32_t round = 1; round <= 3 * cap; round++) {
        T_CHECK(push_seq(&p, &next, round % cap + 1), "round %u push", round);
        T_CHECK(pop_seq(&c, &expect) == round % cap + 1, "round %u pop", round);
    }
    struct ring_shm *shm = mem;
    uint32_t tail = atomic_load(&shm->tail);
    T_CHECK(tail < 1000 && atomic_load(&shm->head) == tail, "indices wrapped to %u", tail);
    free(mem);
}

/* A wild producer's tail: the consumer reports -1 and reads nothing. */
static void test_corrupt_tail(void)
{
    const uint32_t cap = 8;
    void *mem = ring_mem(cap, sizeof(struct small));
    struct ring p, c;
    ring_attach(&p, mem, cap, sizeof(struct small), true);
    ring_attach(&c, mem, cap, sizeof(struct small), false);
    uint64_t next = 0, expect = 0;
    push_seq(&p, &next, 5);
    pop_seq(&c, &expect); /* head = tail = 5 */

    static const uint32_t bad[] = {5 + 9, 5 + 0x80000000u, 5 - 1, 5 - 8, 0};
    struct ring_shm *shm = mem;
    struct small it;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        atomic_store(&shm->tail, bad[i]);
        T_CHECK(ring_pop(&c, &it) == -1, "tail %u with head 5 is impossible", bad[i]);
        T_CHECK(ring_pop(&c, &it) == -1, "and stays impossible");
        T_CHECK(atomic_load(&shm->head) == 5, "head did not move");
    }
    atomic_store(&shm->tail, 5 + cap); /* exactly full is legitimate */
    T_CHECK(ring_pop(&c, &it) == 1, "a full ring pops");
    free(mem);
}

/* A wild consumer's head: the producer sees a full ring and writes nothing.
 * The producer looks at head only when its cached copy says full, so fill
 * the ring first: every later push has to believe the new head. */
static void test_corrupt_head(void)
{
    const uint32_t cap = 8;
    void *mem = ring_mem(cap, sizeof(struct small));
    struct ring p, c;
    ring_attach(&p, mem, cap, sizeof(struct small), true);
    ring_attach(&c, mem, cap, sizeof(struct small), false);
    uint64_t next = 0, expect = 0;
    push_seq(&p, &next, 5);
    pop_seq(&c, &expect);
    T_CHECK(push_seq(&p, &next, cap), "fill: head 5, tail 13");

    /* ahead of tail, far ahead, and more than cap behind */
    static const uint32_t bad[] = {13 + 1, 13 + 0x80000000u, 13 - cap - 1};
    struct ring_shm *shm = mem;
    struct small it = small_item(7);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        atomic_store(&shm->head, bad[i]);
        T_CHECK(!ring_push(&p, &it), "head %u with tail 13 is refused", bad[i]);
        T_CHECK(ring_used(&p) == cap, "used is clamped to cap, got %u", ring_used(&p));
        T_CHECK(atomic_load(&shm->tail) == 13, "tail did not move");
    }
    atomic_store(&shm->head, 6);
    T_CHECK(ring_push(&p, &it), "believable head accepted again");
    T_CHECK(!ring_push(&p, &it), "and the ring is full again");
    free(mem);
}

static void test_reset(void)
{
    const uint32_t cap = 8;
    void *mem = ring_mem(cap, sizeof(struct small));
    set_indices(mem, 1000, 1003);
    struct ring_shm *shm = mem;
    atomic_store(&shm->sleeping, 1);

    ring_reset(mem);
    T_CHECK(atomic_load(&shm->head) == 0 && atomic_load(&shm->tail) == 0 &&
                atomic_load(&shm->sleeping) == 0,
            "reset clears indices and the sleeper flag");
    struct ring p, c;
    ring_attach(&p, mem, cap, sizeof(struct small), true);
    ring_attach(&c, mem, cap, sizeof(struct small), false);
    struct small it;
    T_CHECK(ring_pop(&c, &it) == 0, "empty after reset");
    uint64_t next = 0, expect = 0;
    T_CHECK(push_seq(&p, &next, cap), "full capacity after reset");
    T_CHECK(pop_seq(&c, &expect) == cap, "and it drains");
    free(mem);
}

/* ring_sleep honours its timeout and does not park when data is waiting. */
static void test_sleep_timeout(void)
{
    const uint32_t cap = 8;
    void *mem = ring_mem(cap, sizeof(struct small));
    struct ring p, c;
    ring_attach(&p, mem, cap, sizeof(struct small), true);
    ring_attach(&c, mem, cap, sizeof(struct small), false);
    struct ring_shm *shm = mem;

    struct timespec ts = {0, 20 * 1000 * 1000};
    double t0 = now_s();
    ring_sleep(&c, &ts);
    double slept = now_s() - t0;
    T_CHECK(slept >= 0.015 && slept < 1.0, "slept %.3f s for a 20 ms timeout", slept);
    T_CHECK(atomic_load(&shm->sleeping) == 0, "sleeper flag lowered");

    uint64_t next = 0;
    push_seq(&p, &next, 1);
    struct timespec ten = {10, 0};
    t0 = now_s();
    ring_sleep(&c, &ten);
    slept = now_s() - t0;
    T_CHECK(slept < 1.0, "slept %.3f s with data waiting", slept);
    free(mem);
}

/* --- two processes --- */

/* 64 bytes: a sequence number, filler derived from it, and a checksum. */
struct entry {
    uint64_t seq;
    uint64_t data[6];
    uint64_t sum;
};
_Static_assert(sizeof(struct entry) == 64, "one cache line");

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15u;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9u;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBu;
    return x ^ (x >> 31);
}

static uint64_t entry_sum(const struct entry *e)
{
    uint64_t sum = e->seq;
    for (int i = 0; i < 6; i++)
        sum = mix(sum ^ e->data[i]);
    return sum;
}

static void entry_make(struct entry *e, uint64_t seq)
{
    e->seq = seq;
    for (int i = 0; i < 6; i++)
        e->data[i] = mix(seq * 8 + (uint64_t)i);
    e->sum = entry_sum(e);
}

/* Producer's wait while the ring is full: spin, then yield, then nap. The
 * consumer is awake whenever the ring is full, so no wake-up is needed. */
static void producer_backoff(unsigned *idle)
{
    unsigned n = (*idle)++;
    if (n < 100)
        cpu_relax();
    else if (n < 200)
        sched_yield();
    else
        nanosleep(&(struct timespec){0, 50 * 1000}, NULL);
}

enum { STRESS_OK = 0, STRESS_ORDER, STRESS_SUM, STRESS_WILD, STRESS_EXTRA };

/* Push COUNT entries, waking the consumer after each batch. */
static int produce(struct ring *r, uint64_t count)
{
    uint64_t seq = 0;
    unsigned idle = 0;
    struct entry e;
    while (seq < count) {
        unsigned pushed = 0;
        for (; seq < count && pushed < 64; seq++, pushed++) {
            entry_make(&e, seq);
            if (!ring_push(r, &e))
                break;
        }
        if (pushed) {
            ring_wake(r);
            idle = 0;
        } else {
            producer_backoff(&idle);
        }
    }
    return STRESS_OK;
}

/* Take COUNT entries, each exactly once, in order, intact; then nothing. */
static int consume(struct ring *r, uint64_t count)
{
    uint64_t expect = 0;
    unsigned idle = 0;
    struct entry e;
    struct timespec nap = {0, 10 * 1000 * 1000};
    while (expect < count) {
        int rc = ring_pop(r, &e);
        if (rc < 0)
            return STRESS_WILD;
        if (rc == 0) {
            if (idle++ < 200) {
                cpu_relax();
            } else {
                ring_sleep(r, &nap);
                idle = 0;
            }
            continue;
        }
        idle = 0;
        if (e.seq != expect)
            return STRESS_ORDER;
        if (e.sum != entry_sum(&e) || e.data[5] != mix(expect * 8 + 5))
            return STRESS_SUM;
        expect++;
    }
    return ring_pop(r, &e) == 0 ? STRESS_OK : STRESS_EXTRA;
}

static int run_side(void *mem, uint32_t cap, bool producer, uint64_t count)
{
    struct ring r;
    ring_attach(&r, mem, cap, sizeof(struct entry), producer);
    return producer ? produce(&r, count) : consume(&r, count);
}

static int child_status(pid_t pid)
{
    int status;
    pid_t got = waitpid(pid, &status, 0); /* not inside T_REQUIRE: it evaluates twice */
    T_REQUIRE(got == pid, "waitpid");
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* One process produces, the other consumes, across the 32-bit wrap. */
static void test_two_process(bool child_consumes, uint64_t count)
{
    const uint32_t cap = 1024;
    size_t size = ring_shm_size(cap, sizeof(struct entry));
    void *mem = shared_mem(size);
    ring_reset(mem);
    set_indices(mem, UINT32_MAX - 1000, UINT32_MAX - 1000);

    double t0 = now_s();
    fflush(NULL);
    pid_t pid = fork();
    T_REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        alarm(60); /* a lost wake-up must fail the test, not hang it */
        _exit(run_side(mem, cap, !child_consumes, count));
    }
    alarm(60);
    int mine = run_side(mem, cap, child_consumes, count);
    int theirs = child_status(pid);
    alarm(0);
    int consumer = child_consumes ? theirs : mine;
    int producer = child_consumes ? mine : theirs;
    T_CHECK(consumer == STRESS_OK, "consumer (%s) failed with %d",
            child_consumes ? "child" : "parent", consumer);
    T_CHECK(producer == STRESS_OK, "producer (%s) failed with %d",
            child_consumes ? "parent" : "child", producer);
    struct ring_shm *shm = mem;
    T_CHECK(atomic_load(&shm->head) == (uint32_t)(UINT32_MAX - 1000 + count), "head ended at %u",
            atomic_load(&shm->head));
    printf("two-process stress, %s consumes: %llu entries in %.2f s\n",
           child_consumes ? "child" : "parent", (unsigned long long)count, now_s() - t0);
    munmap(mem, size);
}

/* State letter of PID from /proc ('S' = sleeping), or '?'. */
static char proc_state(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return '?';
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' ? paren[2] : '?';
}

/* A consumer parked with no timeout is woken by the other process's push. */
static void test_wake(void)
{
    const uint32_t cap = 8;
    size_t size = ring_shm_size(cap, sizeof(struct small));
    void *mem = shared_mem(size);
    ring_reset(mem);
    struct ring_shm *shm = mem;

    fflush(NULL);
    pid_t pid = fork();
    T_REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        alarm(10);
        struct ring c;
        ring_attach(&c, mem, cap, sizeof(struct small), false);
        struct small it;
        int rc;
        while ((rc = ring_pop(&c, &it)) == 0)
            ring_sleep(&c, NULL);
        _exit(rc == 1 && it.seq == 42 ? 0 : 1);
    }
    /* Wait until the child has raised its flag and is blocked in the kernel,
     * so the wake, not the re-check of tail, is what gets it out. */
    double deadline = now_s() + 5;
    while ((atomic_load(&shm->sleeping) == 0 || proc_state(pid) != 'S') && now_s() < deadline)
        nanosleep(&(struct timespec){0, 1000 * 1000}, NULL);
    T_CHECK(atomic_load(&shm->sleeping) == 1, "child parked");

    struct ring p;
    ring_attach(&p, mem, cap, sizeof(struct small), true);
    struct small it = small_item(42);
    double t0 = now_s();
    T_CHECK(ring_push(&p, &it), "push");
    ring_wake(&p);
    int status = child_status(pid);
    double took = now_s() - t0;
    T_CHECK(status == 0, "woken child exited with %d", status);
    T_CHECK(took < 1.0, "woken after %.3f s", took);
    munmap(mem, size);
}

int main(void)
{
    test_basic();
    test_full();
    test_wraparound();
    test_corrupt_tail();
    test_corrupt_head();
    test_reset();
    test_sleep_timeout();
    test_wake();
    test_two_process(true, 5000000);
    test_two_process(false, 5000000);
    T_DONE();
}
