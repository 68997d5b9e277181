# The one Makefile: builds every process, runs the tests, starts and stops the local platform.
#
#   make run    install what is missing, start Kafka, FerretDB, Redis and every service
#   make stop   stop what `make run` started
#   make test   build (sanitizer build), unit tests, integration tests on the real stack
#   make        release build of every process into build/rel/bin
#
# The warning flags and the sanitizer build are set here and nowhere else.

MODE ?= rel
B    := build/$(MODE)

CC   ?= cc
STD  := -std=c11 -D_GNU_SOURCE
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
ifeq ($(MODE),asan)
OPT  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDOPT := -fsanitize=address,undefined
else
OPT  := -O2 -g
LDOPT :=
endif

# pkg-config names per third-party library; each binary lists exactly what it links.
PKG_mongo := libmongoc-1.0
PKG_kafka := rdkafka
PKG_redis := hiredis
PKG_http  := libmicrohttpd
PKG_json  := libcjson
PKG_jwt   := libjwt libcrypto
PKG_curl  := libcurl
PKG_sodium := libsodium
PKG_cmocka := cmocka
PKG_vips  := vips
PKG_magic := libmagic
PKG_lws   := libwebsockets libuv
PKG_sqlite := sqlite3

pkgcflags = $(shell pkg-config --cflags $(1) 2>/dev/null)
pkglibs   = $(shell pkg-config --libs $(1) 2>/dev/null)

ALLPKG  := $(PKG_mongo) $(PKG_kafka) $(PKG_redis) $(PKG_http) $(PKG_json) $(PKG_jwt) \
           $(PKG_curl) $(PKG_sodium) $(PKG_cmocka)
CFLAGS  := $(STD) $(WARN) $(OPT) -Ilibcommon/include $(call pkgcflags,$(ALLPKG)) -pthread
LDFLAGS := $(LDOPT) -pthread

# --- libcommon ------------------------------------------------------------------------------
CM_MODULES := error log config uuid utf8 json internal http httpc jwt jws jwks kafka mongo outbox redis auth session ratelimit process clock event health cursor tenant ticker smtp
CM_OBJS := $(patsubst %,$(B)/libcommon/%.o,$(CM_MODULES))
CM_LIB  := $(B)/libcommon.a

$(B)/libcommon/%.o: libcommon/src/%.c $(wildcard libcommon/include/common/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

$(CM_LIB): $(CM_OBJS)
	@rm -f $@
	ar rcs $@ $^

# --- processes ------------------------------------------------------------------------------
# name, sources, pkg-config libraries it links
GATEWAY_SRC   := $(wildcard gateway/*.c)
USER_SRC      := $(wildcard services/user/*.c)
MESSAGING_SRC := $(wildcard services/messaging/*.c)
MEDIA_SRC     := $(wildcard services/media/*.c)
SOCKET_SRC    := $(wildcard services/socket/*.c)
SEARCH_SRC    := $(wildcard services/search/*.c)
NOTIFICATION_SRC := $(wildcard services/notification/*.c)

GATEWAY_LIBS   := $(PKG_http) $(PKG_json) $(PKG_jwt) $(PKG_curl) $(PKG_redis)
USER_LIBS      := $(PKG_http) $(PKG_json) $(PKG_jwt) $(PKG_mongo) $(PKG_kafka) $(PKG_sodium) $(PKG_redis) $(PKG_curl)
MESSAGING_LIBS := $(PKG_http) $(PKG_json) $(PKG_jwt) $(PKG_mongo) $(PKG_kafka) $(PKG_redis) $(PKG_curl)
MEDIA_LIBS     := $(PKG_http) $(PKG_json) $(PKG_jwt) $(PKG_mongo) $(PKG_kafka) $(PKG_redis) \
                  $(PKG_curl) $(PKG_vips) $(PKG_magic)
SOCKET_LIBS    := $(PKG_http) $(PKG_json) $(PKG_jwt) $(PKG_kafka) $(PKG_redis) $(PKG_curl) $(PKG_lws)
SEARCH_LIBS    := $(PKG_http) $(PKG_json) $(PKG_jwt) $(PKG_kafka) $(PKG_redis) $(PKG_curl) $(PKG_sqlite)
NOTIFICATION_LIBS := $(PKG_http) $(PKG_json) $(PKG_jwt) $(PKG_mongo) $(PKG_kafka) $(PKG_redis) $(PKG_curl)

define process
$(B)/obj/$(1)/%.o: $(2)/%.c $$(wildcard $(2)/*.h) $$(wildcard libcommon/include/common/*.h)
	@mkdir -p $$(@D)
	$$(CC) $$(CFLAGS) -I$(2) -c $$< -o $$@
$(B)/bin/$(1): $$(patsubst $(2)/%.c,$(B)/obj/$(1)/%.o,$(filter-out %_test.c,$(3))) $$(CM_LIB)
	@mkdir -p $$(@D)
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(call pkglibs,$(4)) -lm
endef
$(eval $(call process,gateway,gateway,$(GATEWAY_SRC),$(GATEWAY_LIBS)))
$(eval $(call process,user,services/user,$(USER_SRC),$(USER_LIBS)))
$(eval $(call process,messaging,services/messaging,$(MESSAGING_SRC),$(MESSAGING_LIBS)))
$(eval $(call process,media,services/media,$(MEDIA_SRC),$(MEDIA_LIBS)))
$(eval $(call process,socket,services/socket,$(SOCKET_SRC),$(SOCKET_LIBS)))
$(eval $(call process,search,services/search,$(SEARCH_SRC),$(SEARCH_LIBS)))
$(eval $(call process,notification,services/notification,$(NOTIFICATION_SRC),$(NOTIFICATION_LIBS)))

# lws loads its libuv event-lib plugin at run time (dlopen); linking it as well names it in the
# binary (DT_NEEDED), so deploy/docker/runtime-packages.sh puts its package into the image.
$(B)/bin/socket: LDFLAGS += -Wl,--push-state,--no-as-needed -l:libwebsockets-evlib_uv.so -Wl,--pop-state

# The media objects also see libvips' (glib) and libmagic's headers.
$(B)/obj/media/%.o: CFLAGS += $(call pkgcflags,$(PKG_vips) $(PKG_magic))

BINS := $(B)/bin/gateway $(B)/bin/user $(B)/bin/messaging $(B)/bin/media $(B)/bin/socket \
        $(B)/bin/search $(B)/bin/notification

# --- unit tests (cmocka, beside their module) -----------------------------------------------
UNIT_SRC  := $(wildcard libcommon/test/test_*.c) $(wildcard services/*/*_test.c) $(wildcard gateway/*_test.c)
UNIT_BINS := $(patsubst %.c,$(B)/unit/%,$(UNIT_SRC))
UNIT_LIBS := $(ALLPKG)

# A service's unit test links the service's own non-main objects.
svc_objs = $(patsubst %.c,$(B)/obj/$(1)/%.o,$(notdir $(filter-out %/main.c %_test.c,$(wildcard $(2)/*.c))))

$(B)/unit/libcommon/test/%: libcommon/test/%.c $(CM_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(call pkglibs,$(UNIT_LIBS)) -lm
$(B)/unit/services/messaging/%: services/messaging/%.c $(call svc_objs,messaging,services/messaging) $(CM_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Iservices/messaging $(LDFLAGS) -o $@ $^ $(call pkglibs,$(UNIT_LIBS)) -lm
$(B)/unit/services/user/%: services/user/%.c $(call svc_objs,user,services/user) $(CM_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Iservices/user $(LDFLAGS) -o $@ $^ $(call pkglibs,$(UNIT_LIBS)) -lm
$(B)/unit/services/media/%: services/media/%.c $(call svc_objs,media,services/media) $(CM_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(call pkgcflags,$(PKG_vips) $(PKG_magic)) -Iservices/media $(LDFLAGS) -o $@ $^ $(call pkglibs,$(UNIT_LIBS) $(PKG_vips) $(PKG_magic)) -lm
$(B)/unit/services/socket/%: services/socket/%.c $(call svc_objs,socket,services/socket) $(CM_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Iservices/socket $(LDFLAGS) -o $@ $^ $(call pkglibs,$(UNIT_LIBS) $(PKG_lws)) -lm
$(B)/unit/services/search/%: services/search/%.c $(call svc_objs,search,services/search) $(CM_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Iservices/search $(LDFLAGS) -o $@ $^ $(call pkglibs,$(UNIT_LIBS) $(PKG_sqlite)) -lm
$(B)/unit/services/notification/%: services/notification/%.c $(call svc_objs,notification,services/notification) $(CM_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Iservices/notification $(LDFLAGS) -o $@ $^ $(call pkglibs,$(UNIT_LIBS)) -lm
$(B)/unit/gateway/%: gateway/%.c $(call svc_objs,gateway,gateway) $(CM_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Igateway $(LDFLAGS) -o $@ $^ $(call pkglibs,$(UNIT_LIBS)) -lm

# --- benchmarks (bench/, run by `make bench`; never timed tests) ----------------------------
$(B)/bench/%: bench/%.c $(CM_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(call pkglibs,$(UNIT_LIBS)) -lm
# The socket bench's frame counter, loaded by bench/socket_bench.py with ctypes.
$(B)/bench/libws_scan.so: bench/ws_scan.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -fPIC -shared $(LDFLAGS) -o $@ $<
$(B)/bench/media_thumbs: bench/media_thumbs.c $(B)/obj/media/media_image.o $(B)/obj/media/media_rules.o $(CM_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(call pkgcflags,$(PKG_vips) $(PKG_magic)) -Iservices/media $(LDFLAGS) -o $@ $^ $(call pkglibs,$(MEDIA_LIBS)) -lm

$(B)/bench/search_bench: bench/search_bench.c $(call svc_objs,search,services/search) $(CM_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Iservices/search $(LDFLAGS) -o $@ $^ $(call pkglibs,$(SEARCH_LIBS)) -lm

$(B)/bench/search_parts: bench/search_parts.c $(call svc_objs,search,services/search) $(CM_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Iservices/search $(LDFLAGS) -o $@ $^ $(call pkglibs,$(SEARCH_LIBS)) -lm

# --- entry points ---------------------------------------------------------------------------
.PHONY: all build deps run stop status test unit integration check-unit bench fuzz format clean help

all build: $(BINS)

help:
	@sed -n '1,10p' Makefile

deps:
	@bash deploy/deps.sh

run: deps
	@$(MAKE) --no-print-directory MODE=rel build
	@bash deploy/stack.sh start
	@bash deploy/services.sh start rel

stop:
	@bash deploy/services.sh stop || true
	@bash deploy/stack.sh stop

status:
	@bash deploy/stack.sh status
	@bash deploy/services.sh status

# Unit tests of the modules that talk to Kafka, MongoDB or Redis use the real local servers,
# so the stack is started first.
test: deps
	@$(MAKE) --no-print-directory MODE=asan build unit-bins
	@$(MAKE) --no-print-directory MODE=asan check-deploy
	@bash deploy/stack.sh start
	@$(MAKE) --no-print-directory MODE=asan check-unit
	@$(MAKE) --no-print-directory MODE=asan integration

unit-bins: $(UNIT_BINS)

check-unit: $(UNIT_BINS)
	@bash tests/run-unit.sh $(UNIT_BINS)

integration: $(BINS)
	@BUILD_DIR=$(B) .local/venv/bin/python -m pytest -q tests/e2e

bench: $(B)/bench/media_thumbs $(BINS) bench-gateway bench-auth bench-search bench-search-parts bench-socket bench-notification
	@BENCH_BIN=$(B)/bench/media_thumbs BUILD_DIR=$(B) bash bench/media_bench.sh
	@bash deploy/stack.sh start >/dev/null
	@BUILD_DIR=$(B) .local/venv/bin/python bench/messaging_send.py

# The socket service next to uWebSockets.js and Socket.IO (bench/socket_bench.py): release build.
.PHONY: bench-socket
bench-socket:
	@$(MAKE) --no-print-directory MODE=rel build/rel/bin/socket build/rel/bin/messaging build/rel/bench/libws_scan.so
	@BUILD_DIR=build/rel .local/venv/bin/python bench/socket_bench.py

# Token verification and login cost, with their peers (bench/run.sh, bench/README.md).
.PHONY: bench-auth
bench-auth: deps
	@$(MAKE) --no-print-directory MODE=rel build/rel/bench/bench_auth
	@bash bench/run.sh build/rel/bench/bench_auth

# The search index next to raw SQLite FTS5 on a real multilingual corpus, with recall against
# a brute-force scan (bench/search_bench.py): release build.
.PHONY: bench-search
bench-search:
	@$(MAKE) --no-print-directory MODE=rel build/rel/bench/search_bench
	@.local/venv/bin/python bench/search_bench.py build/rel/bench/search_bench $(SEARCH_BENCH_TEXTS)

# Where the index's indexing time goes: its parts, each next to raw FTS5 in one run
# (bench/search_parts.c, bench/README.md), on the first 100,000 texts of the same corpus.
.PHONY: bench-search-parts
bench-search-parts:
	@$(MAKE) --no-print-directory MODE=rel build/rel/bench/search_parts
	@.local/venv/bin/python bench/search_bench.py --parts build/rel/bench/search_parts $(SEARCH_PARTS_TEXTS)

# Push fan-out end to end next to the provider endpoint's own capacity (wrk), release build
# (bench/notification_bench.py).
.PHONY: bench-notification
bench-notification:
	@$(MAKE) --no-print-directory MODE=rel build/rel/bin/notification
	@BUILD_DIR=build/rel .local/venv/bin/python bench/notification_bench.py

# The gateway next to nginx, the service itself and the libmicrohttpd + libcurl floor
# (bench/gateway_bench.sh, bench/gw_floor.c): release build.
.PHONY: bench-gateway
bench-gateway:
	@$(MAKE) --no-print-directory MODE=rel build build/rel/bench/gw_floor
	@bash deploy/stack.sh start >/dev/null
	@BENCH_BIN_DIR=build/rel/bin bash bench/gateway_bench.sh

# Offline checks of the contracts (proto/) and of the deployment descriptions (deploy/docker,
# docker-compose.yml, k8s/) against the processes' own --help; tools from deploy/check-tools.sh.
.PHONY: check-tools check-deploy lint-contracts validate-deploy deploy-config-table smoke-images
check-tools:
	@bash deploy/check-tools.sh

check-deploy: lint-contracts validate-deploy

lint-contracts: check-tools
	@bash deploy/lint-contracts.sh

validate-deploy: check-tools $(BINS)
	@PROCESSES="$(notdir $(BINS))" BUILD_DIR=$(B) bash deploy/validate-deploy.sh

# Each image's runtime stage run for real without Docker (root, Debian archive): deploy/docker/smoke-rootfs.sh.
smoke-images:
	@$(MAKE) --no-print-directory MODE=rel build
	@bash deploy/docker/smoke-rootfs.sh $(notdir $(BINS))

deploy-config-table: check-tools $(BINS)
	@.local/deploy-venv/bin/python deploy/check_deploy.py --root . --bin-dir $(B)/bin \
		--processes "$(notdir $(BINS))" --write-config-table

format:
	@git diff -U0 --no-color HEAD -- '*.c' '*.h' | clang-format-diff -p1 -i 2>/dev/null || \
		echo "format: clang-format-diff not installed (apt-get install clang-format)"

clean:
	rm -rf build
