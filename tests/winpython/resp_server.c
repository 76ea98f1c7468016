/* A small Redis-protocol test server for Windows, built in the test session with
 * x86_64-w64-mingw32-gcc (never committed as a binary) and run under Wine as the "server
 * binary" the tool fetches, starts, verifies and stops.
 *
 * It takes its arguments the way redis-server does: `-` first reads a config file from stdin
 * (`requirepass "..."`, `port N`, `bind ADDR`), then `--name value...` options (unknown ones
 * are accepted and ignored, so the tool's full redis argv works); `--version` prints
 * `Redis server v=...` and exits. Commands: PING, ECHO, AUTH, SET (EX/PX), GET, DEL, EXISTS,
 * EXPIRE, TTL, LPUSH, RPUSH, LLEN, LRANGE, RPOP, BRPOP (blocking, with timeout), INFO, CLIENT,
 * SELECT, SAVE, DEBUG LOG (a line into the log, for the tail tests), HELLO 2|3, SHUTDOWN [SAVE|NOSAVE]. One thread, select(): blocked BRPOP clients are served
 * when a push arrives or answered with a null array when their timeout passes.
 *
 * Misbehaviour on purpose, for the stop tests: `--ignore-shutdown yes` answers SHUTDOWN with an
 * error and keeps running (so stop must escalate to the forced tree kill), `--spawn-child yes`
 * starts a child copy of itself that only sleeps (so the tree kill has a tree to kill).
 */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERSION "7.2.99"
#define MAX_CLIENTS 60
#define MAX_ARGS 1024

typedef struct { char *p; size_t n; } Str;

typedef struct {
    Str key;
    int is_list;
    Str val;
    Str *items; /* list: items[0] is the head */
    size_t len, cap;
    long long expire_ms; /* 0: none */
} Entry;

typedef struct {
    SOCKET fd;
    char *buf;
    size_t len, cap;
    int authed;
    int resp3; /* HELLO 3: nulls are "_" */
    int blocked;
    Str bkeys[16];
    int nbkeys;
    long long deadline_ms; /* 0: forever */
} Client;

static Entry *db;
static size_t db_len, db_cap;
static Client clients[MAX_CLIENTS];
static char password[512];
static int port = 6379;
static char bind_addr[64] = "127.0.0.1";
static int ignore_shutdown, spawn_child;
static long long started_ms;

static long long now_ms(void) { return (long long)GetTickCount64(); }

static void logline(const char *fmt, const char *arg) {
    SYSTEMTIME t;
    GetLocalTime(&t);
    printf("%lu:M %02d:%02d:%02d.%03d * ", (unsigned long)GetCurrentProcessId(), t.wHour,
           t.wMinute, t.wSecond, t.wMilliseconds);
    printf(fmt, arg);
    printf("\n");
    fflush(stdout);
}

static Str dup_str(const char *p, size_t n) {
    Str s;
    s.p = malloc(n + 1);
    memcpy(s.p, p, n);
    s.p[n] = 0;
    s.n = n;
    return s;
}

static int eq(Str a, Str b) { return a.n == b.n && memcmp(a.p, b.p, a.n) == 0; }

static int is(Str a, const char *word) {
    size_t n = strlen(word);
    return a.n == n && _strnicmp(a.p, word, n) == 0;
}

/* --- replies ------------------------------------------------------------------------- */
static void send_all(Client *c, const char *p, size_t n) {
    while (n > 0) {
        int sent = send(c->fd, p, (int)n, 0);
        if (sent <= 0) return;
        p += sent;
        n -= (size_t)sent;
    }
}
static void reply_raw(Client *c, const char *s) { send_all(c, s, strlen(s)); }
static void reply_null(Client *c) { reply_raw(c, c->resp3 ? "_\r\n" : "$-1\r\n"); }
static void reply_null_array(Client *c) { reply_raw(c, c->resp3 ? "_\r\n" : "*-1\r\n"); }
static void reply_int(Client *c, long long v) {
    char b[40];
    snprintf(b, sizeof b, ":%lld\r\n", v);
    reply_raw(c, b);
}
static void reply_bulk(Client *c, const char *p, size_t n) {
    char b[40];
    snprintf(b, sizeof b, "$%llu\r\n", (unsigned long long)n);
    reply_raw(c, b);
    send_all(c, p, n);
    reply_raw(c, "\r\n");
}
static void reply_array_len(Client *c, size_t n) {
    char b[40];
    snprintf(b, sizeof b, "*%llu\r\n", (unsigned long long)n);
    reply_raw(c, b);
}

/* --- keyspace ------------------------------------------------------------------------ */
static void free_entry(Entry *e) {
    free(e->key.p);
    free(e->val.p);
    for (size_t i = 0; i < e->len; i++) free(e->items[i].p);
    free(e->items);
}
static void remove_at(size_t i) {
    free_entry(&db[i]);
    db[i] = db[--db_len];
}
static Entry *lookup(Str key) {
    for (size_t i = 0; i < db_len; i++) {
        if (!eq(db[i].key, key)) continue;
        if (db[i].expire_ms && db[i].expire_ms <= now_ms()) {
            remove_at(i);
            return NULL;
        }
        return &db[i];
    }
    return NULL;
}
static Entry *create(Str key, int is_list) {
    if (db_len == db_cap) {
        db_cap = db_cap ? db_cap * 2 : 64;
        db = realloc(db, db_cap * sizeof *db);
    }
    Entry *e = &db[db_len++];
    memset(e, 0, sizeof *e);
    e->key = dup_str(key.p, key.n);
    e->is_list = is_list;
    return e;
}
static int delete_key(Str key) {
    Entry *e = lookup(key);
    if (!e) return 0;
    remove_at((size_t)(e - db));
    return 1;
}
static void list_push(Entry *e, Str v, int head) {
    if (e->len == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 8;
        e->items = realloc(e->items, e->cap * sizeof *e->items);
    }
    if (head) {
        memmove(e->items + 1, e->items, e->len * sizeof *e->items);
        e->items[0] = dup_str(v.p, v.n);
    } else {
        e->items[e->len] = dup_str(v.p, v.n);
    }
    e->len++;
}
/* Pops the tail into *out (caller frees); removes the key when the list empties. */
static int list_pop_tail(Str key, Str *out) {
    Entry *e = lookup(key);
    if (!e || !e->is_list || e->len == 0) return 0;
    *out = e->items[--e->len];
    if (e->len == 0) remove_at((size_t)(e - db));
    return 1;
}

/* --- blocking pops ------------------------------------------------------------------- */
static void unblock(Client *c) {
    for (int i = 0; i < c->nbkeys; i++) free(c->bkeys[i].p);
    c->nbkeys = 0;
    c->blocked = 0;
}
static int serve_pop(Client *c, Str *keys, int nkeys) {
    for (int i = 0; i < nkeys; i++) {
        Str item;
        if (list_pop_tail(keys[i], &item)) {
            reply_array_len(c, 2);
            reply_bulk(c, keys[i].p, keys[i].n);
            reply_bulk(c, item.p, item.n);
            free(item.p);
            return 1;
        }
    }
    return 0;
}
static void serve_blocked(void) {
    for (int i = 0; i < MAX_CLIENTS; i++) {
        Client *c = &clients[i];
        if (c->fd != INVALID_SOCKET && c->blocked && serve_pop(c, c->bkeys, c->nbkeys))
            unblock(c);
    }
}
static void expire_blocked(void) {
    long long now = now_ms();
    for (int i = 0; i < MAX_CLIENTS; i++) {
        Client *c = &clients[i];
        if (c->fd != INVALID_SOCKET && c->blocked && c->deadline_ms && c->deadline_ms <= now) {
            reply_null_array(c);
            unblock(c);
        }
    }
}

/* --- commands ------------------------------------------------------------------------ */
static int connected(void) {
    int n = 0;
    for (int i = 0; i < MAX_CLIENTS; i++) n += clients[i].fd != INVALID_SOCKET;
    return n;
}

static void cmd_info(Client *c) {
    char b[1024];
    size_t used = 0;
    for (size_t i = 0; i < db_len; i++) used += db[i].key.n + db[i].val.n + 64 * db[i].len;
    snprintf(b, sizeof b,
             "# Server\r\nredis_version:%s\r\nserver_name:wintest\r\nredis_mode:standalone\r\n"
             "os:Windows\r\nprocess_id:%lu\r\ntcp_port:%d\r\nuptime_in_seconds:%lld\r\n\r\n"
             "# Clients\r\nconnected_clients:%d\r\n\r\n# Memory\r\nused_memory:%llu\r\n",
             VERSION, (unsigned long)GetCurrentProcessId(), port,
             (now_ms() - started_ms) / 1000, connected(), (unsigned long long)used);
    reply_bulk(c, b, strlen(b));
}

/* Returns 1 when the server must exit (SHUTDOWN). */
static int check_password(Client *c, Str pass) {
    if (pass.n == strlen(password) && memcmp(pass.p, password, pass.n) == 0) {
        c->authed = 1;
        return 1;
    }
    return 0;
}

/* HELLO [2|3] [AUTH user pass]: redis-py 8 opens every connection with HELLO 3. */
static void cmd_hello(Client *c, Str *a, int n) {
    int proto = n > 1 ? atoi(a[1].p) : (c->resp3 ? 3 : 2);
    if (proto != 2 && proto != 3) return reply_raw(c, "-NOPROTO unsupported protocol version\r\n");
    if (n >= 5 && is(a[2], "AUTH")) {
        if (!check_password(c, a[4]))
            return reply_raw(c, "-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    } else if (password[0] && !c->authed) {
        return reply_raw(c, "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n");
    }
    c->resp3 = proto == 3;
    char b[400];
    snprintf(b, sizeof b,
             "%s\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$%d\r\n%s\r\n"
             "$5\r\nproto\r\n:%d\r\n$2\r\nid\r\n:1\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n"
             "$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
             c->resp3 ? "%7" : "*14", (int)strlen(VERSION), VERSION, proto);
    reply_raw(c, b);
}

static int execute(Client *c, Str *a, int n) {
    if (n == 0) return 0;
    if (is(a[0], "HELLO")) return cmd_hello(c, a, n), 0;
    if (is(a[0], "AUTH")) {
        if (n < 2 || n > 3) return reply_raw(c, "-ERR wrong number of arguments for 'auth'\r\n"), 0;
        Str pass = a[n - 1];
        if (!password[0]) return reply_raw(c, "-ERR AUTH <password> called without any password configured for the default user\r\n"), 0;
        if (check_password(c, pass)) return reply_raw(c, "+OK\r\n"), 0;
        return reply_raw(c, "-WRONGPASS invalid username-password pair or user is disabled.\r\n"), 0;
    }
    if (password[0] && !c->authed) return reply_raw(c, "-NOAUTH Authentication required.\r\n"), 0;
    if (is(a[0], "PING")) {
        if (n > 1) reply_bulk(c, a[1].p, a[1].n);
        else reply_raw(c, "+PONG\r\n");
    } else if (is(a[0], "ECHO") && n == 2) {
        reply_bulk(c, a[1].p, a[1].n);
    } else if (is(a[0], "SET") && n >= 3) {
        long long ttl = 0;
        for (int i = 3; i + 1 < n; i += 2) {
            if (is(a[i], "EX")) ttl = atoll(a[i + 1].p) * 1000;
            else if (is(a[i], "PX")) ttl = atoll(a[i + 1].p);
        }
        delete_key(a[1]);
        Entry *e = create(a[1], 0);
        e->val = dup_str(a[2].p, a[2].n);
        e->expire_ms = ttl ? now_ms() + ttl : 0;
        reply_raw(c, "+OK\r\n");
    } else if (is(a[0], "GET") && n == 2) {
        Entry *e = lookup(a[1]);
        if (!e) reply_null(c);
        else if (e->is_list) reply_raw(c, "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
        else reply_bulk(c, e->val.p, e->val.n);
    } else if ((is(a[0], "DEL") || is(a[0], "UNLINK")) && n >= 2) {
        long long count = 0;
        for (int i = 1; i < n; i++) count += delete_key(a[i]);
        reply_int(c, count);
    } else if (is(a[0], "EXISTS") && n >= 2) {
        long long count = 0;
        for (int i = 1; i < n; i++) count += lookup(a[i]) != NULL;
        reply_int(c, count);
    } else if ((is(a[0], "EXPIRE") || is(a[0], "PEXPIRE")) && n >= 3) {
        Entry *e = lookup(a[1]);
        long long v = atoll(a[2].p) * (is(a[0], "EXPIRE") ? 1000 : 1);
        if (e) e->expire_ms = now_ms() + v;
        reply_int(c, e != NULL);
    } else if (is(a[0], "TTL") && n == 2) {
        Entry *e = lookup(a[1]);
        reply_int(c, !e ? -2 : !e->expire_ms ? -1 : (e->expire_ms - now_ms() + 999) / 1000);
    } else if ((is(a[0], "LPUSH") || is(a[0], "RPUSH")) && n >= 3) {
        Entry *e = lookup(a[1]);
        if (e && !e->is_list) return reply_raw(c, "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"), 0;
        if (!e) e = create(a[1], 1);
        for (int i = 2; i < n; i++) list_push(e, a[i], is(a[0], "LPUSH"));
        reply_int(c, (long long)e->len);
        serve_blocked();
    } else if (is(a[0], "LLEN") && n == 2) {
        Entry *e = lookup(a[1]);
        reply_int(c, e && e->is_list ? (long long)e->len : 0);
    } else if (is(a[0], "LRANGE") && n == 4) {
        Entry *e = lookup(a[1]);
        long long len = e && e->is_list ? (long long)e->len : 0;
        long long start = atoll(a[2].p), stop = atoll(a[3].p);
        if (start < 0) start += len;
        if (stop < 0) stop += len;
        if (start < 0) start = 0;
        if (stop >= len) stop = len - 1;
        if (start > stop) return reply_raw(c, "*0\r\n"), 0;
        reply_array_len(c, (size_t)(stop - start + 1));
        for (long long i = start; i <= stop; i++) reply_bulk(c, e->items[i].p, e->items[i].n);
    } else if (is(a[0], "RPOP") && n == 2) {
        Str item;
        if (list_pop_tail(a[1], &item)) {
            reply_bulk(c, item.p, item.n);
            free(item.p);
        } else {
            reply_null(c);
        }
    } else if (is(a[0], "BRPOP") && n >= 3) {
        double timeout = atof(a[n - 1].p);
        int nkeys = n - 2 > 16 ? 16 : n - 2;
        if (serve_pop(c, a + 1, nkeys)) return 0;
        c->blocked = 1;
        c->nbkeys = nkeys;
        for (int i = 0; i < nkeys; i++) c->bkeys[i] = dup_str(a[1 + i].p, a[1 + i].n);
        c->deadline_ms = timeout > 0 ? now_ms() + (long long)(timeout * 1000) : 0;
    } else if (is(a[0], "INFO")) {
        cmd_info(c);
    } else if (is(a[0], "DEBUG") && n == 3 && is(a[1], "LOG")) {
        logline("DEBUG LOG: %s", a[2].p); /* as Redis: a line into the server's log */
        reply_raw(c, "+OK\r\n");
    } else if (is(a[0], "DBSIZE")) {
        reply_int(c, (long long)db_len);
    } else if (is(a[0], "CLIENT") || is(a[0], "SELECT") || is(a[0], "SAVE")) {
        reply_raw(c, "+OK\r\n");
    } else if (is(a[0], "SHUTDOWN")) {
        if (ignore_shutdown) {
            logline("%s", "SHUTDOWN refused (--ignore-shutdown): still running");
            return reply_raw(c, "-ERR Errors trying to SHUTDOWN. Check logs.\r\n"), 0;
        }
        logline("%s", n > 1 && is(a[1], "NOSAVE") ? "User requested shutdown (nosave)..."
                                                   : "User requested shutdown (save)...");
        logline("%s", "Redis is now ready to exit, bye bye...");
        return 1;
    } else {
        char b[200];
        snprintf(b, sizeof b, "-ERR unknown command '%.60s'\r\n", a[0].p);
        reply_raw(c, b);
    }
    return 0;
}

/* Parse one RESP array from the client's buffer; returns bytes used (0: incomplete,
 * -1: protocol error). Arguments point into the buffer and are NUL-terminated in place. */
static long parse(Client *c, Str *args, int *nargs) {
    char *p = c->buf, *end = c->buf + c->len;
    if (c->len == 0) return 0;
    if (*p != '*') { /* inline command: words up to CRLF */
        char *nl = memchr(p, '\n', c->len);
        if (!nl) return 0;
        *nargs = 0;
        char *s = p;
        while (s < nl && *nargs < MAX_ARGS) {
            while (s < nl && (*s == ' ' || *s == '\r')) s++;
            if (s >= nl) break;
            char *w = s;
            while (s < nl && *s != ' ' && *s != '\r') s++;
            args[*nargs].p = w;
            args[*nargs].n = (size_t)(s - w);
            (*nargs)++;
            *s++ = 0;
        }
        return (long)(nl + 1 - c->buf);
    }
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return 0;
    long count = atol(p + 1);
    if (count < 0 || count > MAX_ARGS) return -1;
    p = nl + 1;
    for (long i = 0; i < count; i++) {
        if (p >= end) return 0;
        if (*p != '$') return -1;
        nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) return 0;
        long long len = atoll(p + 1);
        if (len < 0) return -1;
        p = nl + 1;
        if ((long long)(end - p) < len + 2) return 0;
        args[i].p = p;
        args[i].n = (size_t)len;
        p += len;
        *p = 0; /* overwrites the \r */
        p += 2;
    }
    *nargs = (int)count;
    return (long)(p - c->buf);
}

static void drop(Client *c) {
    closesocket(c->fd);
    c->fd = INVALID_SOCKET;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
    unblock(c);
}

/* --- configuration ------------------------------------------------------------------- */
static void set_option(const char *name, const char *value) {
    if (_stricmp(name, "port") == 0) port = atoi(value);
    else if (_stricmp(name, "bind") == 0) snprintf(bind_addr, sizeof bind_addr, "%s", value);
    else if (_stricmp(name, "requirepass") == 0) snprintf(password, sizeof password, "%s", value);
    else if (_stricmp(name, "ignore-shutdown") == 0) ignore_shutdown = _stricmp(value, "yes") == 0;
    else if (_stricmp(name, "spawn-child") == 0) spawn_child = _stricmp(value, "yes") == 0;
}

/* One redis.conf line: name, then a value that may be "double quoted" with \ escapes. */
static void config_line(char *line) {
    char name[64] = {0}, value[512] = {0};
    char *s = line;
    while (*s == ' ' || *s == '\t') s++;
    size_t i = 0;
    while (*s && *s != ' ' && *s != '\t' && *s != '\r' && *s != '\n' && i < sizeof name - 1)
        name[i++] = *s++;
    while (*s == ' ' || *s == '\t') s++;
    i = 0;
    if (*s == '"') {
        s++;
        while (*s && *s != '"' && i < sizeof value - 1) {
            if (*s == '\\' && s[1]) {
                s++;
                value[i++] = *s == 'n' ? '\n' : *s == 'r' ? '\r' : *s;
                s++;
            } else {
                value[i++] = *s++;
            }
        }
    } else {
        while (*s && *s != '\r' && *s != '\n' && i < sizeof value - 1) value[i++] = *s++;
    }
    if (name[0] && name[0] != '#') set_option(name, value);
}

static void start_child(void) {
    char self[MAX_PATH], cmd[MAX_PATH + 40];
    STARTUPINFOA si;
    PROCESS_INFORMATION pi;
    GetModuleFileNameA(NULL, self, sizeof self);
    snprintf(cmd, sizeof cmd, "\"%s\" --child-sleep", self);
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    if (CreateProcessA(NULL, cmd, NULL, NULL, FALSE, CREATE_NO_WINDOW, NULL, NULL, &si, &pi)) {
        char msg[64];
        snprintf(msg, sizeof msg, "%lu", (unsigned long)pi.dwProcessId);
        logline("started child pid %s", msg);
        CloseHandle(pi.hThread);
        CloseHandle(pi.hProcess);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOFBF, 1 << 14);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("Redis server v=%s sha=00000000:0 malloc=libc bits=64 build=wintest\n", VERSION);
            return 0;
        }
        if (strcmp(argv[i], "--child-sleep") == 0) {
            Sleep(INFINITE);
            return 0;
        }
    }
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "-") == 0) {
        char line[1024];
        while (fgets(line, sizeof line, stdin)) config_line(line);
        first = 2;
    }
    for (int i = first; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) != 0) continue;
        const char *value = i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 ? argv[i + 1] : "";
        set_option(argv[i] + 2, value);
    }
    started_ms = now_ms();
    logline("%s", "oO0OoO0OoO0Oo wintest RESP server starting oO0OoO0OoO0Oo");
    WSADATA wsa;
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0) return 1;
    SOCKET lsock = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = inet_addr(bind_addr);
    /* Exclusive, as on Windows a second server must not share the port. */
    BOOL yes = TRUE;
    setsockopt(lsock, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (const char *)&yes, sizeof yes);
    if (bind(lsock, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lsock, 64) != 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s:%d (error %d)", bind_addr, port, WSAGetLastError());
        logline("Warning: Could not create server TCP listening socket %s", msg);
        return 1;
    }
    for (int i = 0; i < MAX_CLIENTS; i++) clients[i].fd = INVALID_SOCKET;
    if (spawn_child) start_child();
    logline("%s", "Server initialized");
    logline("%s", "Ready to accept connections tcp");
    static Str args[MAX_ARGS];
    for (;;) {
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(lsock, &rd);
        for (int i = 0; i < MAX_CLIENTS; i++)
            if (clients[i].fd != INVALID_SOCKET) FD_SET(clients[i].fd, &rd);
        struct timeval tv = {0, 10000}; /* 10 ms: BRPOP timeouts are checked this often */
        int ready = select(0, &rd, NULL, NULL, &tv);
        expire_blocked();
        if (ready <= 0) continue;
        if (FD_ISSET(lsock, &rd)) {
            SOCKET fd = accept(lsock, NULL, NULL);
            int slot = -1;
            for (int i = 0; i < MAX_CLIENTS && slot < 0; i++)
                if (clients[i].fd == INVALID_SOCKET) slot = i;
            if (fd != INVALID_SOCKET && slot < 0) closesocket(fd);
            if (fd != INVALID_SOCKET && slot >= 0) {
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof one);
                memset(&clients[slot], 0, sizeof clients[slot]);
                clients[slot].fd = fd;
            }
        }
        for (int i = 0; i < MAX_CLIENTS; i++) {
            Client *c = &clients[i];
            if (c->fd == INVALID_SOCKET || !FD_ISSET(c->fd, &rd)) continue;
            if (c->cap - c->len < 65536) {
                c->cap = c->cap * 2 + 65536;
                c->buf = realloc(c->buf, c->cap);
            }
            int got = recv(c->fd, c->buf + c->len, (int)(c->cap - c->len - 1), 0);
            if (got <= 0) {
                drop(c);
                continue;
            }
            c->len += (size_t)got;
            while (!c->blocked) {
                int nargs = 0;
                long used = parse(c, args, &nargs);
                if (used < 0) {
                    reply_raw(c, "-ERR Protocol error\r\n");
                    drop(c);
                    break;
                }
                if (used == 0) break;
                int quit = execute(c, args, nargs);
                memmove(c->buf, c->buf + used, c->len - (size_t)used);
                c->len -= (size_t)used;
                if (quit) {
                    closesocket(lsock);
                    for (int j = 0; j < MAX_CLIENTS; j++)
                        if (clients[j].fd != INVALID_SOCKET) closesocket(clients[j].fd);
                    fflush(stdout);
                    return 0;
                }
            }
        }
    }
}
