/*
 * HTTP requests with the curl command line: see http.h.
 */
#include "http.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The Content-Type curl sends with a body (the bridge takes JSON as
 * application/json only, raw bodies as anything but the types a form can
 * send), unless extra gives one. */
static const char *body_type(const char *path, const char *data,
                             const char *extra)
{
	size_t n = strcspn(path, "?");
	if (data == NULL || (extra != NULL && strstr(extra, "Content-Type")))
		return "";
	return n >= 8 && strncmp(path + n - 8, "/publish", 8) == 0
	           ? "-H 'Content-Type: application/json'"
	           : "-H 'Content-Type: application/octet-stream'";
}

int th_http_t(int port, const char *method, const char *path, const char *data,
              const char *extra, int max_s, struct th_resp *r)
{
	char body[512], head[512], code[512], req[512], url[512];
	size_t cap = strlen(path) + (extra != NULL ? strlen(extra) : 0) + 4096;
	char *cmd = malloc(cap);
	ASSERT(cmd != NULL);
	th_path(body, sizeof(body), "curl.body");
	th_path(head, sizeof(head), "curl.head");
	th_path(code, sizeof(code), "curl.code");
	th_path(req, sizeof(req), "curl.req");
	th_path(url, sizeof(url), "curl.url");
	remove(body);
	remove(head);
	remove(code);
	if (data != NULL)
		th_write_file(req, data);
	snprintf(cmd, cap, "url = \"http://127.0.0.1:%d%s\"\n", port, path);
	th_write_file(url, cmd);
	snprintf(cmd, cap,
	         "curl -s -g --max-time %d -o '%s' -D '%s' -w '%%{http_code}' "
	         "-X %s %s%s%s %s %s -K '%s' > '%s'",
	         max_s, body, head, method, data != NULL ? "--data-binary '@" : "",
	         data != NULL ? req : "", data != NULL ? "'" : "",
	         body_type(path, data, extra), extra != NULL ? extra : "", url,
	         code);
	const char *argv[] = {"sh", "-c", cmd, NULL};
	th_run(argv, NULL, (max_s + 10) * 1000);
	free(cmd);
	char *c = th_read_file(code, NULL);
	memset(r, 0, sizeof(*r));
	r->status = atoi(c);
	free(c);
	r->body = th_read_file(body, NULL);
	r->head = th_read_file(head, NULL);
	r->json = cJSON_Parse(r->body);
	return r->status;
}

int th_http(int port, const char *method, const char *path, const char *data,
            const char *extra, struct th_resp *r)
{
	return th_http_t(port, method, path, data, extra, 20, r);
}

void th_resp_free(struct th_resp *r)
{
	free(r->body);
	free(r->head);
	cJSON_Delete(r->json);
	memset(r, 0, sizeof(*r));
}

void th_expect_http_error(int port, const char *method, const char *path,
                          const char *data, const char *extra, int status,
                          int alt, const char *file, int line)
{
	struct th_resp r;
	th_http(port, method, path, data, extra, &r);
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(r.json, "error");
	if ((r.status != status && (alt == 0 || r.status != alt)) ||
	    !cJSON_IsString(m) || m->valuestring[0] == '\0')
		th_fail(file, line,
		        "%s %.200s (%.200s): status %d, not %d with a JSON error: "
		        "%.300s",
		        method, path, data ? data : "", r.status, status, r.body);
	th_resp_free(&r);
}

int th_expect_published(int port, const char *path, const char *data,
                        const char *extra, const char *file, int line)
{
	struct th_resp r;
	th_http(port, "POST", path, data, extra, &r);
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(r.json, "id");
	if (r.status != 200 || !cJSON_IsNumber(id) || id->valueint <= 0 ||
	    cJSON_GetArraySize(r.json) != 1)
		th_fail(file, line, "POST %s (%.200s): status %d: %s", path,
		        data ? data : "", r.status, r.body);
	int v = id->valueint;
	th_resp_free(&r);
	return v;
}
