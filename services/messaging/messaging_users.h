/* messaging_users.h - what the messaging service keeps from the users topic: each tenant's
 * blocks, and the erasure of deleted users' messages. Apart from messaging.h so the hooks stay
 * one call each in the send and direct-conversation paths. */
#ifndef MESSAGING_USERS_H
#define MESSAGING_USERS_H

#include "messaging.h"

#define MSG_COLL_BLOCKS "blocks"
#define MSG_ERASED_SENDER "deleted-user" /* the sender of an erased user's anonymised messages */

typedef struct messaging_users messaging_users;

/* Starts the consumer of the users topic (consumer group USERS_CONSUMER_GROUP, default
 * "messaging-users", from the beginning for a new group so the block list is complete) on its
 * own thread: user.blocked and user.unblocked keep the blocks collection (the latest event of
 * each pair wins, by event id: the user service may produce an event again late), user.deleted
 * anonymises (empties the text of, and unattributes) or deletes the user's messages per the
 * event's erase_policy and forgets their blocks. Every handler is idempotent; an event is
 * committed only once handled; unreadable events go to users.dlq. */
cm_err messaging_users_start(messaging_ctx *ctx, messaging_users **out);

/* Stops the consumer (commits what was handled). Accepts NULL. */
void messaging_users_stop(messaging_users *u);

/* Direct-conversation hook: when `other` blocked `sender` in `tenant`, answers 403 and returns
 * 1; returns 0 otherwise (and when the block list cannot be read: 503 answered, returns 1). */
int messaging_users_refuse_direct(cm_http_req *req, messaging_ctx *ctx, const char *tenant,
                                  const char *sender, const char *other);

/* Send hook: in a direct conversation `conv` (a stored conversation document), when the other
 * member blocked `sender`, answers 403 and returns 1; 0 otherwise. Group conversations are not
 * affected by blocks. */
int messaging_users_refuse_send(cm_http_req *req, messaging_ctx *ctx, const char *tenant,
                                const char *sender, const bson_t *conv);

#endif
