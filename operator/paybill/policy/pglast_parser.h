/*
 * pglast's parser, for the C tree readers (treedicts.c, treeprotobuf.c): found in pglast's loaded extension module
 * and called through pointers looked up in it alone, never through the global symbol scope (where PostgreSQL's
 * internals would shadow libpq's), so the readers run pglast's grammar on pglast's own structures.
 */
#ifndef PAYBILL_PGLAST_PARSER_H
#define PAYBILL_PGLAST_PARSER_H

#include <dlfcn.h>
#include <pthread.h>

static PgQueryInternalParsetreeAndError (*raw_parse)(const char *input, int parser_options);
static MemoryContext (*enter_memory_context)(void);
static void (*exit_memory_context)(MemoryContext context);
static void (*free_error)(PgQueryError *error);
static int (*next_member)(const Bitmapset *set, int previous);
static bool (*stack_is_too_deep)(void); /* libpg_query's stack budget, which its writers keep to */
static PyObject *parse_error; /* pglast.parser.ParseError */

static void *pglast_function(void *library, const char *name)
{
	void *found = dlsym(library, name);
	if (found == NULL)
		PyErr_Format(PyExc_ImportError, "pglast's parser has no %s", name);
	return found;
}

/* At module init: 0, or -1 with an ImportError set. */
static int load_pglast_parser(void)
{
	PyObject *pglast = PyImport_ImportModule("pglast.parser");
	if (pglast == NULL)
		return -1;
	parse_error = PyObject_GetAttrString(pglast, "ParseError");
	PyObject *path = PyObject_GetAttrString(pglast, "__file__");
	Py_DECREF(pglast);
	if (parse_error == NULL || path == NULL) {
		Py_XDECREF(path);
		return -1;
	}
	/* already loaded by the import above: RTLD_NOLOAD returns it, RTLD_LOCAL keeps its symbols out of the global
	   scope */
	void *library = dlopen(PyUnicode_AsUTF8(path), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
	Py_DECREF(path);
	if (library == NULL) {
		PyErr_Format(PyExc_ImportError, "pglast's parser is not loaded: %s", dlerror());
		return -1;
	}
	raw_parse = pglast_function(library, "pg_query_raw_parse");
	enter_memory_context = pglast_function(library, "pg_query_enter_memory_context");
	exit_memory_context = pglast_function(library, "pg_query_exit_memory_context");
	free_error = pglast_function(library, "pg_query_free_error");
	next_member = pglast_function(library, "bms_next_member");
	stack_is_too_deep = pglast_function(library, "stack_is_too_deep");
	return PyErr_Occurred() ? -1 : 0;
}

/* Per-thread state, read at every node: initial-exec, a direct access instead of a __tls_get_addr call (if the
   loader had no static TLS left for it, the import fails and the engine takes pglast's own paths). */
#define PER_THREAD static _Thread_local __attribute__((tls_model("initial-exec")))

/* The stack a walk leaves free below it: for the frames of one more level, and for the error's way back. */
#define STACK_HEADROOM (64 * 1024)

/* The lowest address this thread's walks may reach (found once per thread). */
PER_THREAD char *stack_floor;

/* Whether a walk may go one level deeper: within libpg_query's stack budget, which its own writers keep to (set for
   the call by enter_memory_context; they raise "stack depth limit exceeded" past it), and within this thread's
   stack, whatever its size. */
static int stack_left(void)
{
	char here;
	if (stack_is_too_deep())
		return 0;
	if (stack_floor == NULL) {
		pthread_attr_t attributes;
		void *low = NULL;
		size_t size = 0;
		if (pthread_getattr_np(pthread_self(), &attributes) == 0) {
			if (pthread_attr_getstack(&attributes, &low, &size) != 0)
				low = NULL;
			pthread_attr_destroy(&attributes);
		}
		stack_floor = low != NULL ? (char *) low + STACK_HEADROOM : &here - 4 * STACK_HEADROOM;
	}
	return &here > stack_floor;
}

/* The module, with the pglast version it was built for (tree.py uses it only under that version). */
static PyObject *create_module(struct PyModuleDef *definition)
{
	if (load_pglast_parser() < 0)
		return NULL;
	PyObject *module = PyModule_Create(definition);
	if (module != NULL && PyModule_AddStringConstant(module, "PGLAST_VERSION", PGLAST_VERSION) < 0)
		Py_CLEAR(module);
	return module;
}

/* Parse `sql` and give its statements to `read`, inside libpg_query's memory context for this call. Raises
   ValueError for a NUL (libpg_query would stop at it) and pglast's ParseError, in pglast's form, for bad SQL. */
static PyObject *parse_then(PyObject *sql, PyObject *(*read)(const List *statements))
{
	Py_ssize_t size;
	const char *input = PyUnicode_AsUTF8AndSize(sql, &size);
	if (input == NULL)
		return NULL;
	if ((Py_ssize_t) strlen(input) != size) {
		PyErr_SetString(PyExc_ValueError, "the statement contains a NUL character");
		return NULL;
	}
	MemoryContext context = enter_memory_context();
	PgQueryInternalParsetreeAndError parsed = raw_parse(input, 0);
	free(parsed.stderr_buffer);
	PyObject *result = NULL;
	if (parsed.error != NULL) {
		/* the message and a 0-based character index, or None outside the statement */
		long index = parsed.error->cursorpos - 1;
		PyObject *args = index >= 0 && index < PyUnicode_GET_LENGTH(sql)
			? Py_BuildValue("(sl)", parsed.error->message, index)
			: Py_BuildValue("(sO)", parsed.error->message, Py_None);
		if (args != NULL) {
			PyErr_SetObject(parse_error, args);
			Py_DECREF(args);
		}
		free_error(parsed.error);
	} else
		result = read(parsed.tree);
	exit_memory_context(context);
	return result;
}

#endif
