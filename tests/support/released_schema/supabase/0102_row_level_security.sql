-- convmem on Supabase: row-level security and grants. Apply after the postgres/ files
-- (0001_init, 0002_functions, 0003_reseal, 0004_revisions), by pasting the files in order
-- into the SQL editor of the project, or with `convmem migrate --store "postgresql://…?migrations=supabase"`.
-- (Version 0101 was the first schema's REST functions; 0002 replaces them.)
--
-- Only the service role (the server's key) reaches conversations: the anon and
-- authenticated roles of Supabase's public API can neither read the tables nor call the
-- functions, whatever default privileges the project grants on new objects.

-- Locks down every convmem table and function; later migrations that add one call it again.
CREATE OR REPLACE FUNCTION convmem_lock_down() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_table regclass;
    v_function regprocedure;
BEGIN
    FOR v_table IN
        SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND c.relname LIKE 'convmem\_%' AND n.nspname = current_schema()
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('DROP POLICY IF EXISTS convmem_service_role ON %s', v_table);
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, anon, authenticated', v_table);
        IF v_table = 'convmem_schema_migrations'::regclass THEN
            EXECUTE format('CREATE POLICY convmem_service_role ON %s FOR SELECT TO service_role'
                           ' USING (true)', v_table);
            EXECUTE format('GRANT SELECT ON %s TO service_role', v_table);
        ELSE
            EXECUTE format('CREATE POLICY convmem_service_role ON %s FOR ALL TO service_role'
                           ' USING (true) WITH CHECK (true)', v_table);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO service_role', v_table);
        END IF;
    END LOOP;
    FOR v_function IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.proname LIKE 'convmem\_%' AND n.nspname = current_schema()
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC, anon, authenticated',
                       v_function);
        IF v_function <> 'convmem_lock_down()'::regprocedure THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', v_function);
        END IF;
    END LOOP;
END
$$;

SELECT convmem_lock_down();

INSERT INTO convmem_schema_migrations (version, name) VALUES (102, '0102_row_level_security')
ON CONFLICT (version) DO NOTHING;
