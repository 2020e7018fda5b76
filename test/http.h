/*
 * HTTP requests from the tests with the curl command line (an independent
 * client), and the checks on the bridge's answers that many tests make.
 */
#ifndef CWM_TEST_HTTP_H
#define CWM_TEST_HTTP_H

#include <cjson/cJSON.h>

struct th_resp {
	int status;   /* 0 when curl got no answer */
	char *body;   /* malloc()ed, "" when none */
	char *head;   /* the response's status line and headers */
	cJSON *json;  /* the body parsed, or NULL */
};

/* curl -X method http://127.0.0.1:port<path>, given up after 20 s; data
 * (may be NULL) is sent byte for byte (--data-binary, from a file), with a
 * Content-Type the bridge takes unless extra gives one: application/json
 * to a path ending in /publish, application/octet-stream to others. extra:
 * more curl arguments as shell text (may be NULL). The URL goes through a
 * curl config file, so that long paths stay off the command line. Returns
 * r->status; free r with th_resp_free(). */
int th_http(int port, const char *method, const char *path, const char *data,
            const char *extra, struct th_resp *r);
/* The same, given up after max_s seconds. */
int th_http_t(int port, const char *method, const char *path, const char *data,
              const char *extra, int max_s, struct th_resp *r);
void th_resp_free(struct th_resp *r);

/* One request that must fail with status (or alt, when not 0) and a body
 * {"error":"<non-empty text>"}; fails the test at file:line otherwise. */
void th_expect_http_error(int port, const char *method, const char *path,
                          const char *data, const char *extra, int status,
                          int alt, const char *file, int line);
/* One publish that must answer 200 and {"id":N}, N > 0 (and nothing else
 * in the object); returns N. */
int th_expect_published(int port, const char *path, const char *data,
                        const char *extra, const char *file, int line);

#endif
