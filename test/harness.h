/*
 * A small test runner in the style of libuv's test/task.h: every TEST runs
 * in its own forked process with a timeout, so that a crash, a hang or a
 * leak (LeakSanitizer reports at exit) fails that test alone. Processes a
 * test starts are tracked and killed by PID when it ends, whatever the
 * outcome. The runner ends with "N passed, N failed".
 *
 *   TEST(name) { ... }                 30 s timeout
 *   TEST_T(name, seconds) { ... }      own timeout (scaled by
 *                                      TEST_TIMEOUT_SCALE under sanitizers)
 *   ./build/test/test_x [substring]    run the tests whose name matches
 */
#ifndef CWM_TEST_HARNESS_H
#define CWM_TEST_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef void (*th_fn)(void);
void th_register(const char *name, th_fn fn, int timeout_s, const char *file);

#define TEST_T(name, seconds)                                                  \
	static void name(void);                                                    \
	__attribute__((constructor)) static void name##_register(void)             \
	{                                                                          \
		th_register(#name, name, seconds, __FILE__);                           \
	}                                                                          \
	static void name(void)
#define TEST(name) TEST_T(name, 30)

void th_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

#define ASSERT(cond)                                                           \
	do {                                                                       \
		if (!(cond))                                                           \
			th_fail(__FILE__, __LINE__, "assertion failed: %s", #cond);        \
	} while (0)

#define TH_CMP_(a, op, b)                                                      \
	do {                                                                       \
		long long a_ = (long long)(a), b_ = (long long)(b);                    \
		if (!(a_ op b_))                                                       \
			th_fail(__FILE__, __LINE__, "%s %s %s: %lld vs %lld", #a, #op, #b, \
			        a_, b_);                                                   \
	} while (0)
#define ASSERT_EQ(a, b) TH_CMP_(a, ==, b)
#define ASSERT_NE(a, b) TH_CMP_(a, !=, b)
#define ASSERT_GT(a, b) TH_CMP_(a, >, b)
#define ASSERT_GE(a, b) TH_CMP_(a, >=, b)
#define ASSERT_LT(a, b) TH_CMP_(a, <, b)
#define ASSERT_LE(a, b) TH_CMP_(a, <=, b)

#define ASSERT_STREQ(a, b)                                                     \
	do {                                                                       \
		const char *a_ = (a), *b_ = (b);                                       \
		if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                   \
			th_fail(__FILE__, __LINE__, "%s == %s: \"%s\" vs \"%s\"", #a, #b,  \
			        a_ ? a_ : "(null)", b_ ? b_ : "(null)");                   \
	} while (0)

#define ASSERT_CONTAINS(hay, needle)                                           \
	do {                                                                       \
		const char *h_ = (hay), *n_ = (needle);                                \
		if (h_ == NULL || strstr(h_, n_) == NULL)                              \
			th_fail(__FILE__, __LINE__, "%s does not contain \"%s\": \"%s\"",  \
			        #hay, n_, h_ ? h_ : "(null)");                             \
	} while (0)

/* hay contains each of the strings that follow. */
#define ASSERT_CONTAINS_ALL(hay, ...)                                          \
	do {                                                                       \
		const char *const all_[] = {__VA_ARGS__};                              \
		for (size_t i_ = 0; i_ < sizeof(all_) / sizeof(all_[0]); i_++)         \
			ASSERT_CONTAINS(hay, all_[i_]);                                    \
	} while (0)

#define ASSERT_NOT_CONTAINS(hay, needle)                                       \
	do {                                                                       \
		const char *h_ = (hay), *n_ = (needle);                                \
		if (h_ != NULL && strstr(h_, n_) != NULL)                              \
			th_fail(__FILE__, __LINE__, "%s contains \"%s\": \"%s\"", #hay,    \
			        n_, h_);                                                   \
	} while (0)

/* Polls cond every 5 ms for up to ms milliseconds; true if it held. A GNU
 * statement expression (gcc and clang), marked __extension__ so that the
 * tests build with -Wpedantic (make strict); the library itself is ISO C. */
int64_t th_now_ms(void);
void th_sleep_ms(int ms);
#define WAIT_UNTIL(cond, ms)                                                   \
	__extension__({                                                            \
		int64_t until_ = th_now_ms() + (int64_t)(ms) * th_timeout_scale();     \
		int ok_ = 0;                                                           \
		while (!(ok_ = !!(cond)) && th_now_ms() < until_)                      \
			th_sleep_ms(5);                                                    \
		ok_;                                                                   \
	})
int th_timeout_scale(void);

#endif
