/* SPDX-License-Identifier: Apache-2.0 */

/*
 * image.list answers read as a stream of tokens straight into MsbImage
 * structs, with yajl's parser. jansson builds a tree of the whole answer
 * first, at about 180 instructions a byte: for 5,000 images (1.3 MB) that
 * was 60% of `msb-image ls` (bench/list). yajl's lexer without a tree is
 * about ten times faster, and each image's json is its span of the answer,
 * exactly as the daemon sent it, instead of a second serialization.
 *
 * The reader takes only a well-formed, successful answer to our request,
 * with every member of every image of the type image_fields says. Anything
 * else (a notification, an error, a member of the wrong type, a number or
 * a nesting jansson would refuse, \u0000, a number text over
 * NUMBER_MAX_CHARS) it declines, and jansson reads
 * the line as before: what is refused, and the error for it, stay the
 * generic reader's. One difference is left: yajl reads a lone UTF-16
 * surrogate escape (\uD800) as a replacement character where jansson
 * refuses the answer; the daemon never writes one.
 */

#include <math.h>
#include <yajl/yajl_parse.h>

#include "client-internal.h"

/* jansson refuses deeper nesting (JSON_PARSER_MAX_DEPTH); so does this
 * reader, by declining. */
#define LIST_MAX_DEPTH 2048

/* The longest number text read: an int64 has at most 20 characters; a
 * longer real is declined (and left to jansson) rather than copied. */
#define NUMBER_MAX_CHARS 63

typedef enum EnvelopeMember {
        MEMBER_OTHER,
        MEMBER_JSONRPC,
        MEMBER_ID,
        MEMBER_RESULT,
} EnvelopeMember;

typedef struct ListReader {
        yajl_handle yajl;
        const char *text;
        uint64_t request_id;
        bool oom;

        /* Where the next token is: 0 outside the answer, 1 among the
         * envelope's members, 2 among the result's items, 3 among an
         * item's members. skip counts the levels of a value being passed
         * over (a member this reader does not know). */
        unsigned depth;
        unsigned skip;
        EnvelopeMember member; /* the envelope member whose value comes next */
        bool seen_jsonrpc, seen_id, seen_result;

        size_t result_start, result_end;
        size_t answer_end; /* just past the envelope's '}' */
        int field;              /* index in image_fields of the item member whose value comes next; -1: none */
        unsigned fields_seen;   /* a bit per image_fields entry */
        size_t item_start;
        MsbImage item;
        MsbImage *images;
        size_t n_images, n_allocated;
} ListReader;

/* Bytes of the answer read so far: just past the token being reported,
 * when called from a callback (the whole answer is one chunk). */
static size_t reader_offset(const ListReader *r) {
        return yajl_get_bytes_consumed(r->yajl);
}

static int decline(ListReader *r) {
        (void) r;
        return 0; /* yajl stops: yajl_status_client_canceled */
}

static int no_memory(ListReader *r) {
        r->oom = true;
        return 0;
}

typedef enum Nesting {
        NEST_TOO_DEEP, /* decline */
        NEST_SKIPPED,  /* passed over: inside a skipped value, or a member this reader ignores */
        NEST_READ,
} Nesting;

/* A nested value (an object or an array) begins. */
static Nesting nest(ListReader *r) {
        if (r->depth + r->skip >= LIST_MAX_DEPTH)
                return NEST_TOO_DEEP;
        if (r->skip > 0 || (r->depth == 1 && r->member == MEMBER_OTHER) || (r->depth == 3 && r->field < 0)) {
                r->skip++;
                return NEST_SKIPPED;
        }
        return NEST_READ;
}

/* Where field f of the item being read is kept. */
static void *item_field(ListReader *r, const ImageField *f) {
        return (char *) &r->item + f->offset;
}

/* A new item: every member absent, which for a nullable integer means
 * MSB_NULL_INT (json_get_int_nullable()'s reading of an absent member). */
static void item_begin(ListReader *r) {
        r->item = (MsbImage) {};
        for (size_t i = 0; i < IMAGE_FIELDS; i++)
                if (image_fields[i].kind == IMAGE_FIELD_INT_NULLABLE)
                        *(int64_t *) item_field(r, &image_fields[i]) = MSB_NULL_INT;
        r->field = -1;
        r->fields_seen = 0;
}

static int set_string(ListReader *r, const ImageField *f, const unsigned char *s, size_t len) {
        char **p = item_field(r, f);
        char *copy = strndup((const char *) s, len);

        if (!copy)
                return no_memory(r);
        free(*p);
        *p = copy;
        return 1;
}

/* A JSON number as jansson reads it: an integer (no fraction, no
 * exponent) within int64, or a real that does not overflow a double.
 * false for a number jansson refuses, wherever it stands in the answer. */
typedef struct Number {
        bool is_integer;
        long long integer;
        double real;
} Number;

static bool number_parse(const char *s, size_t len, Number *ret) {
        char text[NUMBER_MAX_CHARS + 1], *end;

        if (len > NUMBER_MAX_CHARS)
                return false; /* a real this long is refused, not rounded, to keep the reader simple */
        memcpy(text, s, len);
        text[len] = '\0';
        errno = 0;
        ret->is_integer = !strpbrk(text, ".eE");
        if (ret->is_integer) {
                ret->integer = strtoll(text, &end, 10);
                return errno == 0 && *end == '\0';
        }
        ret->real = strtod(text, &end);
        return *end == '\0' && !(errno == ERANGE && isinf(ret->real));
}

/* A number as an image_fields integer, as json_get_int() and
 * json_get_int_nullable() read it from jansson's tree. */
static int set_number(ListReader *r, const ImageField *f, const Number *n) {
        int64_t *p = item_field(r, f);

        if (n->is_integer) {
                *p = n->integer;
                return 1;
        }
        if (f->kind != IMAGE_FIELD_INT_NULLABLE || json_real_to_int(n->real, p) < 0)
                return decline(r);
        return 1;
}

/* A scalar value at the reader's position (null, a boolean, a number or a
 * string: number or string set, the others NULL). */
static int scalar(ListReader *r, bool is_null, const char *number, size_t number_len, const unsigned char *string,
                  size_t string_len) {
        Number n = {};

        if (number && !number_parse(number, number_len, &n))
                return decline(r);
        if (string && memchr(string, '\0', string_len))
                return decline(r); /* jansson refuses \u0000 */
        if (r->skip > 0)
                return 1;
        switch (r->depth) {
        case 1:
                if (r->member == MEMBER_JSONRPC) {
                        if (!string || string_len != 3 || memcmp(string, "2.0", 3) != 0)
                                return decline(r);
                        r->seen_jsonrpc = true;
                } else if (r->member == MEMBER_ID) {
                        /* jansson's integer; a real or null is not our id. */
                        if (!number || !n.is_integer || n.integer < 0 || (uint64_t) n.integer != r->request_id)
                                return decline(r);
                        r->seen_id = true;
                } else if (r->member == MEMBER_RESULT)
                        return decline(r); /* not a list */
                r->member = MEMBER_OTHER;
                return 1;
        case 3:
                if (r->field < 0)
                        return 1;
                const ImageField *f = &image_fields[r->field];
                r->fields_seen |= 1u << r->field;
                if (is_null) {
                        if (f->kind == IMAGE_FIELD_STRING_NULLABLE) {
                                char **p = item_field(r, f);
                                free(*p);
                                *p = NULL;
                                return 1;
                        }
                        if (f->kind == IMAGE_FIELD_INT_NULLABLE) {
                                *(int64_t *) item_field(r, f) = MSB_NULL_INT;
                                return 1;
                        }
                        return decline(r);
                }
                if (string && (f->kind == IMAGE_FIELD_STRING || f->kind == IMAGE_FIELD_STRING_NULLABLE))
                        return set_string(r, f, string, string_len);
                if (number && (f->kind == IMAGE_FIELD_INT || f->kind == IMAGE_FIELD_INT_NULLABLE))
                        return set_number(r, f, &n);
                return decline(r);
        default:
                return decline(r); /* a bare value, or an item that is not an object */
        }
}

static int on_null(void *ctx) {
        return scalar(ctx, true, NULL, 0, NULL, 0);
}

static int on_boolean(void *ctx, int value) {
        (void) value;
        return scalar(ctx, false, NULL, 0, NULL, 0);
}

static int on_number(void *ctx, const char *s, size_t len) {
        return scalar(ctx, false, s, len, NULL, 0);
}

static int on_string(void *ctx, const unsigned char *s, size_t len) {
        return scalar(ctx, false, NULL, 0, s, len);
}

static int on_map_key(void *ctx, const unsigned char *key, size_t len) {
        ListReader *r = ctx;

        if (memchr(key, '\0', len))
                return decline(r);
        if (r->skip > 0)
                return 1;
#define KEY_IS(k) (len == strlen(k) && memcmp(key, k, len) == 0)
        if (r->depth == 1) {
                /* A member twice: jansson keeps the last; decline rather than model it. */
                if ((KEY_IS("jsonrpc") && r->seen_jsonrpc) || (KEY_IS("id") && r->seen_id) ||
                    (KEY_IS("result") && r->seen_result) || KEY_IS("error"))
                        return decline(r);
                r->member = KEY_IS("jsonrpc") ? MEMBER_JSONRPC
                            : KEY_IS("id")    ? MEMBER_ID
                            : KEY_IS("result") ? MEMBER_RESULT
                                               : MEMBER_OTHER;
                return 1;
        }
        r->field = -1;
        for (size_t i = 0; i < IMAGE_FIELDS; i++)
                if (KEY_IS(image_fields[i].name)) {
                        r->field = (int) i;
                        break;
                }
#undef KEY_IS
        return 1;
}

static int on_start_map(void *ctx) {
        ListReader *r = ctx;

        Nesting n = nest(r);
        if (n != NEST_READ)
                return n == NEST_SKIPPED ? 1 : decline(r);
        switch (r->depth) {
        case 0:
                r->depth = 1;
                return 1;
        case 2:
                r->depth = 3;
                item_begin(r);
                r->item_start = reader_offset(r) - 1;
                return 1;
        default:
                return decline(r); /* an envelope member or an image field that must not be an object */
        }
}

static int finish_item(ListReader *r) {
        for (size_t i = 0; i < IMAGE_FIELDS; i++)
                if (!(r->fields_seen & (1u << i)) &&
                    (image_fields[i].kind == IMAGE_FIELD_STRING || image_fields[i].kind == IMAGE_FIELD_INT))
                        return decline(r);
        if (r->n_images == r->n_allocated) {
                size_t n = r->n_allocated ? 2 * r->n_allocated : 64;
                MsbImage *a = reallocarray(r->images, n, sizeof(MsbImage));
                if (!a)
                        return no_memory(r);
                r->images = a;
                r->n_allocated = n;
        }
        size_t end = reader_offset(r);
        r->item.json = strndup(r->text + r->item_start, end - r->item_start);
        if (!r->item.json)
                return no_memory(r);
        r->images[r->n_images++] = r->item;
        r->item = (MsbImage) {};
        return 1;
}

static int on_end_map(void *ctx) {
        ListReader *r = ctx;

        if (r->skip > 0) {
                r->skip--;
                return 1;
        }
        r->depth = r->depth == 3 ? 2 : 0;
        if (r->depth == 0)
                r->answer_end = reader_offset(r);
        return r->depth == 2 ? finish_item(r) : 1;
}

static int on_start_array(void *ctx) {
        ListReader *r = ctx;

        Nesting n = nest(r);
        if (n != NEST_READ)
                return n == NEST_SKIPPED ? 1 : decline(r);
        if (r->depth == 1 && r->member == MEMBER_RESULT) {
                r->depth = 2;
                r->seen_result = true;
                r->result_start = reader_offset(r) - 1;
                return 1;
        }
        return decline(r);
}

static int on_end_array(void *ctx) {
        ListReader *r = ctx;

        if (r->skip > 0) {
                r->skip--;
                return 1;
        }
        r->result_end = reader_offset(r);
        r->depth = 1;
        r->member = MEMBER_OTHER;
        return 1;
}

static const yajl_callbacks list_callbacks = {
        .yajl_null = on_null,
        .yajl_boolean = on_boolean,
        .yajl_number = on_number,
        .yajl_string = on_string,
        .yajl_start_map = on_start_map,
        .yajl_map_key = on_map_key,
        .yajl_end_map = on_end_map,
        .yajl_start_array = on_start_array,
        .yajl_end_array = on_end_array,
};

static void reader_done(ListReader *r) {
        image_done(&r->item);
        for (size_t i = 0; i < r->n_images; i++)
                image_done(&r->images[i]);
        free(r->images);
        if (r->yajl)
                yajl_free(r->yajl);
}

int image_list_read_answer(const char *line, size_t len, uint64_t request_id, void *userdata) {
        _cleanup_(reader_done) ListReader r = { .text = line, .request_id = request_id, .field = -1 };
        MsbImageList *list;

        r.yajl = yajl_alloc(&list_callbacks, NULL, &r);
        if (!r.yajl)
                return -ENOMEM;
        if (yajl_parse(r.yajl, (const unsigned char *) line, len) != yajl_status_ok ||
            yajl_complete_parse(r.yajl) != yajl_status_ok)
                return r.oom ? -ENOMEM : 0;
        if (!r.seen_jsonrpc || !r.seen_id || !r.seen_result)
                return 0;
        /* yajl takes an unfinished token after the answer (a lone '"') for
         * the end of its input; jansson refuses anything but whitespace. */
        for (size_t i = r.answer_end; i < len; i++)
                if (!strchr(" \t\n\r", line[i]) || line[i] == '\0')
                        return 0;

        list = calloc(1, sizeof(*list));
        if (!list)
                return -ENOMEM;
        list->json = strndup(line + r.result_start, r.result_end - r.result_start);
        if (!list->json) {
                free(list);
                return -ENOMEM;
        }
        list->images = r.images ?: calloc(1, sizeof(MsbImage));
        if (!list->images) {
                free(list->json);
                free(list);
                return -ENOMEM;
        }
        list->n_images = r.n_images;
        r.images = NULL;
        r.n_images = 0;
        *(MsbImageList **) userdata = list;
        return 1;
}
