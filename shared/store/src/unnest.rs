//! Batches bound by name: one struct per set of columns, one builder.
//!
//! A PostgreSQL batch statement binds one array per column and turns them
//! back into rows with `unnest`. Written by hand, that is twenty positional
//! parameters (`$1..$20`) matched to aliases (`t(u, ns, a, …)`) and to twenty
//! `.bind` calls in the same order, where swapping two `text[]` binds
//! compiles and stores wrong data. [`unnest_rows!`] declares the columns
//! once — field, Rust type, SQL type — and generates both the `unnest(…)`
//! clause, whose aliases are the field names, and the binds, in the same
//! order. Statements then refer to `t.namespace`, not to `$2`.

/// Declares a column set: a struct with one `Vec` per field, an `unnest`
/// clause builder and a binder. See the module docs.
macro_rules! unnest_rows {
    (
        $(#[$meta:meta])*
        $name:ident<$lt:lifetime> { $($(#[$fmeta:meta])* $field:ident : $ty:ty = $sql:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Default)]
        pub(crate) struct $name<$lt> {
            $($(#[$fmeta])* pub $field: Vec<$ty>,)+
            _marker: std::marker::PhantomData<&$lt ()>,
        }

        #[allow(dead_code)]
        impl<$lt> $name<$lt> {
            /// How many parameters the set binds.
            pub const PARAMS: usize = [$(stringify!($field)),+].len();

            /// `unnest($first::type[], …) WITH ORDINALITY AS alias(field, …, i)`:
            /// the rows, with their position in `i`.
            pub fn unnest(first: usize, alias: &str) -> String {
                let types: Vec<&str> = vec![$($sql),+];
                let names: Vec<&str> = vec![$(stringify!($field)),+];
                let args: Vec<String> = types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| format!("${}::{}[]", first + i, t))
                    .collect();
                format!(
                    "unnest({}) WITH ORDINALITY AS {}({}, i)",
                    args.join(", "),
                    alias,
                    names.join(", ")
                )
            }

            /// Binds the columns to `q`, in the order [`Self::unnest`] numbers them.
            pub fn bind<'q>(
                self,
                q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
            ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>
            where
                $lt: 'q,
            {
                $(let q = q.bind(self.$field);)+
                q
            }

            /// How many rows the set holds.
            pub fn len(&self) -> usize {
                [$(self.$field.len()),+][0]
            }
        }
    };
}

pub(crate) use unnest_rows;

#[cfg(test)]
mod tests {
    unnest_rows! {
        /// Two columns.
        Pairs<'a> { name: &'a str = "text", seen: bool = "bool" }
    }

    #[test]
    fn the_clause_names_each_parameter_after_its_field() {
        assert_eq!(
            Pairs::unnest(3, "t"),
            "unnest($3::text[], $4::bool[]) WITH ORDINALITY AS t(name, seen, i)"
        );
        assert_eq!(Pairs::PARAMS, 2);
        let p = Pairs {
            name: vec!["a"],
            seen: vec![true],
            ..Default::default()
        };
        assert_eq!(p.len(), 1);
    }
}
