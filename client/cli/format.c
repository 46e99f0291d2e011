/* SPDX-License-Identifier: Apache-2.0 */

/*
 * --format templates of ls and inspect. Docker's --format is a Go
 * text/template; the part people type (placeholders, json, "table" with
 * tab-separated columns) is small, and no Debian C library implements Go's
 * template syntax, so this file parses that part by hand: literal text,
 * {{.Field.Sub}}, {{json .Field}} and {{json .}}. Anything else between
 * braces is refused rather than guessed at.
 */

#include "cli.h"

typedef enum SegmentKind {
        SEGMENT_TEXT,
        SEGMENT_FIELD, /* {{.Path}}: the value as Go's %v prints it */
        SEGMENT_JSON,  /* {{json .Path}}: the value as compact JSON */
} SegmentKind;

typedef struct Segment {
        SegmentKind kind;
        char *text;         /* literal text, or the dotted path ("" for the whole view) */
        const char *header; /* of a field, for "table TEMPLATE" */
} Segment;

struct CliTemplate {
        size_t n_segments;
        Segment *segments;
};

static CliTemplate *template_free(CliTemplate *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_segments; i++)
                free(t->segments[i].text);
        free(t->segments);
        free(t);
        return NULL;
}
DEFINE_FREEP(CliTemplate, template_free)

void cli_output_done(CliOutput *o) {
        o->template = template_free(o->template);
}

static int template_add(CliTemplate *t, SegmentKind kind, const char *text, size_t len, const char *header) {
        Segment *s = realloc(t->segments, (t->n_segments + 1) * sizeof(Segment));

        if (!s)
                return -ENOMEM;
        t->segments = s;
        s = &t->segments[t->n_segments];
        *s = (Segment) { .kind = kind, .text = strndup(text, len), .header = header };
        if (!s->text)
                return -ENOMEM;
        t->n_segments++;
        return 0;
}

/* Literal text, with the escapes docker also turns into characters: a
 * shell does not make a tab out of "\t" inside quotes. */
static int template_add_text(CliTemplate *t, const char *text, size_t len) {
        _cleanup_free_ char *out = malloc(len + 1);
        size_t n = 0;

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                if (text[i] == '\\' && i + 1 < len && (text[i + 1] == 't' || text[i + 1] == 'n')) {
                        out[n++] = text[i + 1] == 't' ? '\t' : '\n';
                        i++;
                } else
                        out[n++] = text[i];
        }
        return n > 0 ? template_add(t, SEGMENT_TEXT, out, n, NULL) : 0;
}

/* The usage error for a field the view does not have, naming those it has. */
static int report_unknown_field(const CliCommand *cmd, const char *field, size_t len, const CliField *fields,
                                size_t n_fields) {
        _cleanup_free_ char *names = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&names, &size);

        if (!f)
                return -ENOMEM;
        for (size_t i = 0; i < n_fields; i++)
                fprintf(f, "%s.%s", i > 0 ? " " : "", fields[i].path);
        if (fclose(f) != 0)
                return -ENOMEM;
        return cli_usage_error(cmd, "unknown field '.%.*s' in --format (fields: %s)", (int) len, field, names);
}

/*
 * One action between {{ and }}: ".", ".Path" or "json <either>". Returns
 * 0, or reports the usage error and returns CLI_EXIT_USAGE (-ENOMEM when
 * out of memory).
 */
static int template_add_action(const CliCommand *cmd, CliTemplate *t, const char *action, size_t len,
                               const CliField *fields, size_t n_fields) {
        SegmentKind kind = SEGMENT_FIELD;
        const char *arg = action, *end = action + len;

        if (len > 4 && strncmp(action, "json", 4) == 0 && (action[4] == ' ' || action[4] == '\t')) {
                kind = SEGMENT_JSON;
                for (arg = action + 4; arg < end && (*arg == ' ' || *arg == '\t'); arg++)
                        ;
        }
        if (arg == end || *arg != '.' || (end - arg > 1 && strspn(arg + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                                           "abcdefghijklmnopqrstuvwxyz"
                                                                           "0123456789_.") <
                                                                     (size_t) (end - arg - 1))) {
                cli_usage_error(cmd, "unsupported template action '{{%.*s}}' in --format "
                                     "(use {{.Field}}, {{json .Field}} or {{json .}})", (int) len, action);
                return CLI_EXIT_USAGE;
        }
        arg++;
        if (arg == end)
                return template_add(t, kind, "", 0, "VALUE");
        for (size_t i = 0; i < n_fields; i++)
                if (strlen(fields[i].path) == (size_t) (end - arg) && strncmp(fields[i].path, arg, end - arg) == 0)
                        return template_add(t, kind, arg, end - arg, fields[i].header);
        return report_unknown_field(cmd, arg, (size_t) (end - arg), fields, n_fields);
}

static int template_parse(const CliCommand *cmd, const char *s, const CliField *fields, size_t n_fields,
                          CliTemplate **ret) {
        _cleanup_(template_freep) CliTemplate *t = calloc(1, sizeof(CliTemplate));
        int r;

        if (!t)
                return -ENOMEM;
        for (;;) {
                const char *open = strstr(s, "{{"), *close, *a, *b;

                r = template_add_text(t, s, open ? (size_t) (open - s) : strlen(s));
                if (r != 0 || !open)
                        break;
                close = strstr(open + 2, "}}");
                if (!close) {
                        cli_usage_error(cmd, "unterminated '{{' in --format");
                        return CLI_EXIT_USAGE;
                }
                for (a = open + 2; a < close && (*a == ' ' || *a == '\t'); a++)
                        ;
                for (b = close; b > a && (b[-1] == ' ' || b[-1] == '\t'); b--)
                        ;
                r = template_add_action(cmd, t, a, (size_t) (b - a), fields, n_fields);
                if (r != 0)
                        return r;
                s = close + 2;
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(t);
        return 0;
}

int cli_parse_output(const CliCommand *cmd, const char *arg, const CliField *fields, size_t n_fields,
                     CliOutput *ret) {
        int r;

        *ret = (CliOutput) {};
        if (streq(arg, "json") || streq(arg, "table"))
                return cli_parse_format(cmd, arg, &ret->format);
        if (strncmp(arg, "table ", 6) == 0) {
                ret->table = true;
                arg += 6;
        }
        /* Any other word is a typo of a format name more likely than a
         * template that prints the same text for every image. */
        if (!strstr(arg, "{{"))
                return cli_usage_error(cmd, "unknown format '%s' (use table, json or a template such as "
                                            "'{{.Reference}}')", arg);
        ret->format = CLI_FORMAT_TEMPLATE;
        r = template_parse(cmd, arg, fields, n_fields, &ret->template);
        if (r < 0) {
                fputs(CLI_PROGRAM ": out of memory\n", stderr);
                return CLI_EXIT_FAILURE;
        }
        return r;
}

/* A value as Go's fmt %v prints what encoding/json decodes: strings bare,
 * lists as [a b], objects as map[k:v] with sorted keys, null as nothing. */
static int print_value(FILE *f, json_t *v) {
        const char *key;
        json_t *item;
        size_t i;

        switch (json_typeof(v)) {
        case JSON_STRING:
                fwrite(json_string_value(v), 1, json_string_length(v), f);
                return 0;
        case JSON_INTEGER:
                fprintf(f, "%lld", (long long) json_integer_value(v));
                return 0;
        case JSON_REAL:
                fprintf(f, "%.17g", json_real_value(v));
                return 0;
        case JSON_TRUE:
        case JSON_FALSE:
                fputs(json_is_true(v) ? "true" : "false", f);
                return 0;
        case JSON_ARRAY:
                fputc('[', f);
                json_array_foreach(v, i, item) {
                        if (i > 0)
                                fputc(' ', f);
                        print_value(f, item);
                }
                fputc(']', f);
                return 0;
        case JSON_OBJECT: {
                _cleanup_free_ const char **keys = calloc(json_object_size(v) ?: 1, sizeof(char *));
                size_t n = 0;

                if (!keys)
                        return -ENOMEM;
                json_object_foreach(v, key, item)
                        keys[n++] = key;
                qsort(keys, n, sizeof(char *), cli_compare_strings);
                fputs("map[", f);
                for (i = 0; i < n; i++) {
                        fprintf(f, "%s%s:", i > 0 ? " " : "", keys[i]);
                        print_value(f, json_object_get(v, keys[i]));
                }
                fputc(']', f);
                return 0;
        }
        default:
                return 0;
        }
}

/* The value at a dotted path of the view; NULL when a step is missing. */
static json_t *view_lookup(json_t *view, const char *path) {
        json_t *v = view;

        while (*path && v) {
                size_t n = strcspn(path, ".");
                char key[64];

                if (n >= sizeof(key))
                        return NULL;
                memcpy(key, path, n);
                key[n] = '\0';
                v = json_object_get(v, key);
                path += n + (path[n] == '.');
        }
        return v;
}

/* Renders the template for one view (or its header row when view is
 * NULL) into a new string. */
static int template_render(const CliTemplate *t, json_t *view, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f;
        int r = 0;

        f = open_memstream(&buf, &size);
        if (!f)
                return -errno;
        for (size_t i = 0; i < t->n_segments && r >= 0; i++) {
                const Segment *s = &t->segments[i];
                json_t *v;

                if (s->kind == SEGMENT_TEXT)
                        fputs(s->text, f);
                else if (!view)
                        fputs(s->kind == SEGMENT_JSON ? "JSON" : s->header, f);
                else if (!(v = view_lookup(view, s->text)))
                        continue;
                else if (s->kind == SEGMENT_FIELD)
                        r = print_value(f, v);
                else {
                        _cleanup_free_ char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                        if (!text)
                                r = -ENOMEM;
                        else
                                fputs(text, f);
                }
        }
        if (fclose(f) != 0 && r >= 0)
                r = -errno;
        if (r < 0)
                return r;
        *ret = TAKE_PTR(buf);
        return 0;
}

/* Splits a rendered row at tabs into n cells (the last one keeps any
 * further tabs; missing ones are empty) for the table. */
static int table_add_split(CliTable *table, char *row) {
        _cleanup_free_ const char **cells = calloc(table->n_columns, sizeof(char *));

        if (!cells)
                return -ENOMEM;
        for (size_t i = 0; i < table->n_columns; i++) {
                char *tab = i + 1 < table->n_columns && row ? strchr(row, '\t') : NULL;
                cells[i] = row ?: "";
                if (tab)
                        *tab = '\0';
                row = tab ? tab + 1 : NULL;
        }
        return cli_table_add(table, cells);
}

static int print_table(const CliTemplate *t, json_t *views) {
        _cleanup_(cli_table_freep) CliTable *table = NULL;
        _cleanup_free_ char *header = NULL;
        size_t n_columns = 1, i;
        json_t *view;
        int r;

        r = template_render(t, NULL, &header);
        if (r < 0)
                return r;
        for (const char *p = header; (p = strchr(p, '\t')); p++)
                n_columns++;
        table = calloc(1, sizeof(CliTable));
        if (!table)
                return -ENOMEM;
        table->n_columns = n_columns;
        r = table_add_split(table, header);
        json_array_foreach(views, i, view) {
                _cleanup_free_ char *row = NULL;

                if (r < 0)
                        return r;
                r = template_render(t, view, &row);
                if (r >= 0)
                        r = table_add_split(table, row);
        }
        if (r < 0)
                return r;
        cli_table_print(table, stdout);
        return 0;
}

int cli_output_print(const CliOutput *o, json_t *views) {
        json_t *view;
        size_t i;
        int r;

        if (o->table)
                return print_table(o->template, views);
        json_array_foreach(views, i, view) {
                _cleanup_free_ char *line = NULL;

                r = template_render(o->template, view, &line);
                if (r < 0)
                        return r;
                puts(line);
        }
        return 0;
}
